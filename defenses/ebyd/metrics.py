"""Backdoor-defence metrics in the BackdoorBench convention (Wu et al. 2022, "BackdoorBench: A
Comprehensive Benchmark of Backdoor Learning", NeurIPS Datasets and Benchmarks).

A *model* maps float images ``[N, 3, H, W]`` in [0, 1] to logits ``[N, C]``. Rates are floats in
[0, 1]; a rate over an empty subset is ``nan``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted labels ``[N]`` (long, on CPU), in eval mode; the model's mode is restored."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        parts = [model(images[i:i + batch_size].to(device)).argmax(dim=1).cpu()
                 for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def _rate(hits: torch.Tensor) -> float:
    return float(hits.float().mean()) if len(hits) else float("nan")


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Clean accuracy (CA): share of images predicted as their label."""
    return _rate(predict(model, images) == labels.cpu())


def prediction_shares(model: nn.Module, images: torch.Tensor, num_classes: int) -> np.ndarray:
    """Share of the images predicted as each class, ``[num_classes]`` summing to 1."""
    counts = np.bincount(predict(model, images).numpy(), minlength=num_classes)
    return counts / max(1, counts.sum())


def attack_success_rate(model: nn.Module, poisoned_images: torch.Tensor, target_label: int,
                        true_labels: torch.Tensor) -> float:
    """ASR: share of poisoned images predicted as the target, over images whose true label is
    not the target (those would count as successes without any backdoor)."""
    keep = true_labels.cpu() != target_label
    return _rate(predict(model, poisoned_images[keep]) == target_label)


def robust_accuracy(model: nn.Module, poisoned_images: torch.Tensor, true_labels: torch.Tensor,
                    target_label: int | None = None) -> float:
    """RA: share of poisoned images still predicted as their true label. With ``target_label``,
    over the ASR's subset (true label != target); without it, over all the images given (pass
    only non-target images then)."""
    labels = true_labels.cpu()
    keep = labels != target_label if target_label is not None else torch.ones_like(labels).bool()
    return _rate(predict(model, poisoned_images[keep]) == labels[keep])


def defense_effectiveness_rate(asr_before: float, asr_after: float, ca_before: float,
                               ca_after: float) -> float:
    """BackdoorBench DER = [max(0, ΔASR) − max(0, ΔCA) + 1] / 2, with Δ = before − after.

    1 is perfect (ASR 1 → 0 at no accuracy cost), 0.5 changes nothing, 0 is the worst."""
    delta_asr = max(0.0, asr_before - asr_after)
    delta_ca = max(0.0, ca_before - ca_after)
    return (delta_asr - delta_ca + 1.0) / 2.0
