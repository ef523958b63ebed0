"""A prompt guard in front of an unlearned model: flag prompts about the forgotten subjects.

Unlearning cannot stop a user from putting the forgotten knowledge back in the prompt (the
in-context re-introduction probe shows it: UnUnlearning, Shumailov et al. 2024,
arXiv:2407.00106), and RWKU's rewrites (arXiv:2406.10890) bring back facts that the plain
question no longer does. So the tool also ships a content filter that sits in front of the model,
in the spirit of ECO prompts (Liu et al. 2024, arXiv:2406.07933: a prompt classifier detects
prompts about the unlearned subjects, which are then answered as if the model never knew) and of
O3 (Gao et al. 2024, arXiv:2407.10223: an out-of-distribution detector on embeddings of the
forget data).

The guard is a standard ``BertForSequenceClassification`` folder (labels ``allow`` / ``flag``):
the pretrained all-MiniLM-L6-v2 encoder, frozen, under a head trained on the audit JSONL
(:mod:`defenses.guard.train`). Being a plain text classifier, it can itself be audited with
``redteam audit GUARD --suite adversarial`` (character-level evasion with TextAttack).
"""

from defenses.guard.encoder import cls_states, encoder_dir, load_encoder
from defenses.guard.train import (
    EVAL_FILE,
    GUARD_FILE,
    LABELS,
    THRESHOLD,
    HeadSettings,
    train_guard,
    training_prompts,
)

__all__ = ["EVAL_FILE", "GUARD_FILE", "LABELS", "THRESHOLD", "HeadSettings", "cls_states",
           "encoder_dir", "load_encoder", "train_guard", "training_prompts"]
