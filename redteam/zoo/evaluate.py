"""Quick checks of the demo LMs: greedy few-shot QA and reading-comprehension accuracy.

These measure the zoo itself (its tests, its build summary); the audit probes live in
``redteam/probes``. A question counts as answered when the expected answer appears in the cut
greedy output (case-insensitive).
"""

from __future__ import annotations

import random

from redteam.core.answers import pick_shots
from redteam.core.data import AuditItem
from redteam.core.prompts import ANSWER_STOPS, context_qa_block, cut_answer, few_shot_prompt
from redteam.core.scoring import CausalLMScorer
from redteam.zoo.authors import reading_comprehension


def generate_greedy(model, tokenizer, prompts: list[str], max_new_tokens: int = 16,
                    batch_size: int = 64) -> list[str]:
    """Greedy continuations, through the same batched scorer the probes use."""
    scorer = CausalLMScorer(model, tokenizer, batch_size=batch_size)
    return scorer.generate(prompts, max_new_tokens=max_new_tokens, stop=ANSWER_STOPS)


def _answered(output: str, answer: str) -> bool:
    return answer.lower() in cut_answer(output).lower()


def _item(row: dict) -> AuditItem:
    return AuditItem(split=row.get("split", ""), subject=row.get("subject", ""),
                     question=row.get("question", ""), answer=row.get("answer", ""))


def qa_accuracy(model, tokenizer, items: list[dict], split: str, k: int = 3,
                seed: int = 0) -> float:
    """Share of the ``split`` questions answered greedily with a k-shot retain prompt.

    The solved examples are chosen as the audit's probes choose them (``pick_shots``: other
    subjects' retain QA, seeded per question), so the zoo is measured the way it is audited.
    """
    chosen = [_item(row) for row in items if row.get("split") == split and row.get("question")]
    if not chosen:
        raise ValueError(f"no QA items in split {split!r}")
    pool = [_item(row) for row in items if row.get("split") == "retain" and row.get("question")]
    prompts = [few_shot_prompt(pick_shots(item, pool, k, seed), item.question)
               for item in chosen]
    outputs = generate_greedy(model, tokenizer, prompts)
    return sum(_answered(o, item.answer) for o, item in zip(outputs, chosen, strict=True)) / len(
        chosen
    )


def reading_accuracy(model, tokenizer, count: int = 100, seed: int = 12345) -> float:
    """Share of fresh reading-comprehension questions (unseen random entities) answered."""
    examples = reading_comprehension(random.Random(f"rc-eval-{seed}"), count)
    prompts = [context_qa_block(c, q) for c, q, _ in examples]
    outputs = generate_greedy(model, tokenizer, prompts)
    return sum(_answered(o, a) for o, (_, _, a) in zip(outputs, examples, strict=True)) / count
