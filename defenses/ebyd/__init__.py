"""EBYD backdoor exposure, detection, trigger recovery and removal on image and text classifiers.

Framework level (pure torch + numpy): a model is any ``nn.Module`` mapping one input tensor to
logits (images ``[N, 3, H, W]`` in [0, 1], or packed token ids ``[N, 2, L]`` through
``redteam.core.text_classifiers.TokenClassifier``); the caller's model is never modified.

- Clean Unlearning exposure and VAR detection: "Expose Before You Defend" (Li et al. 2024,
  arXiv:2410.19427) — :mod:`defenses.ebyd.exposure`.
- Neural Cleanse trigger recovery (Wang et al. 2019) — :mod:`defenses.ebyd.neural_cleanse`.
- Trigger-word recovery for text (HotFlip-proposed, verified by insertion) —
  :mod:`defenses.ebyd.text_triggers`.
- Reconstructive Neuron Pruning removal (Li et al. 2023, arXiv:2305.14876) —
  :mod:`defenses.ebyd.removal`.
- BackdoorBench metrics (CA, ASR, RA, DER) — :mod:`defenses.ebyd.metrics`.
"""

from defenses.ebyd.exposure import (
    BackdoorVerdict,
    CleanUnlearningResult,
    CollapseConsistency,
    clean_unlearning,
    collapse_consistency,
    detect_backdoor,
    history_csv,
    share_margin,
)
from defenses.ebyd.metrics import (
    accuracy,
    attack_success_rate,
    defense_effectiveness_rate,
    model_device,
    predict,
    prediction_shares,
    robust_accuracy,
)
from defenses.ebyd.neural_cleanse import (
    ClassTrigger,
    TriggerScan,
    anomaly_indices,
    neural_cleanse,
    reverse_trigger,
    reverse_triggers,
    trigger_image,
)
from defenses.ebyd.removal import (
    PruningResult,
    fine_tune_with_stamps,
    prune_channels,
    reconstructive_neuron_pruning,
    unlearn_trigger,
)

__all__ = [
    "BackdoorVerdict", "ClassTrigger", "CleanUnlearningResult", "CollapseConsistency",
    "PruningResult", "TriggerScan", "collapse_consistency",
    "accuracy", "anomaly_indices", "attack_success_rate", "clean_unlearning",
    "defense_effectiveness_rate", "detect_backdoor", "fine_tune_with_stamps", "history_csv",
    "model_device",
    "neural_cleanse", "predict", "prediction_shares", "prune_channels",
    "reconstructive_neuron_pruning", "reverse_trigger", "reverse_triggers", "robust_accuracy",
    "share_margin",
    "trigger_image", "unlearn_trigger",
]
