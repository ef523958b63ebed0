"""Unlearnable Clusters (Zhang et al., CVPR 2023): label-agnostic protection of an image dataset.

``redteam protect`` (``redteam.commands.protect``) is the command; this package is the method: the
surrogate (``surrogate``), the per-cluster perturbation generator (``generator``) and the
steps (``method``). ``evaluation`` measures how well a protected folder resists training.
"""

from defenses.unlearnable_clusters.method import (
    REFERENCE,
    UnlearnableClusters,
    apply_perturbation,
    embed,
    kl_to_center,
)

__all__ = ["REFERENCE", "UnlearnableClusters", "apply_perturbation", "embed", "kl_to_center"]
