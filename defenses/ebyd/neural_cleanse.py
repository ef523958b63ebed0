"""Trigger recovery with Neural Cleanse (Wang et al. 2019, "Neural Cleanse: Identifying and
Mitigating Backdoor Attacks in Neural Networks", IEEE S&P).

For each class, find the smallest mask ``m`` and a pattern ``p`` such that
``x' = (1 − m)·x + m·p`` is classified as that class; a backdoor target needs a much smaller
mask than the other classes. EBYD (arXiv:2410.19427) runs it on the exposed model, where the
backdoor stands out more.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defenses.ebyd.metrics import model_device

CONSISTENCY = 1.4826  # MAD → standard deviation for normal data


@dataclass
class ClassTrigger:
    """The reversed trigger of one class: mask ``[1,H,W]`` and pattern ``[3,H,W]`` in [0, 1]."""

    label: int
    mask: torch.Tensor
    pattern: torch.Tensor
    l1_norm: float
    attack_success: float  # share of the images sent to ``label`` by this trigger
    reached: bool  # the success threshold was reached during the search


@dataclass
class TriggerScan:
    """Per-class reversed triggers with their anomaly index; ``flagged_classes`` sorted by
    index, largest first."""

    triggers: list[ClassTrigger]
    anomaly_index: dict[int, float]
    flagged_classes: list[int]
    anomaly_threshold: float = 2.0
    l1_norms: dict[int, float] = field(default_factory=dict)

    def trigger(self, label: int) -> ClassTrigger:
        return next(t for t in self.triggers if t.label == label)


def anomaly_indices(norms: dict[int, float]) -> dict[int, float]:
    """(median − norm) / (1.4826 × MAD) per class: positive for masks smaller than the median."""
    values = np.array(list(norms.values()), dtype=float)
    median = float(np.median(values))
    mad = CONSISTENCY * float(np.median(np.abs(values - median)))
    mad = max(mad, 1e-12)
    return {label: (median - norm) / mad for label, norm in norms.items()}


def _squash(raw: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(raw) + 1) / 2


def _unsquash(value: torch.Tensor) -> torch.Tensor:
    return torch.atanh((value * 2 - 1).clamp(-0.999, 0.999))


@torch.no_grad()
def _success(model: nn.Module, images: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor,
             label: int, batch_size: int) -> float:
    device = model_device(model)
    hits = 0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        stamped = (1 - mask) * x + mask * pattern
        hits += int((model(stamped).argmax(1) == label).sum())
    return hits / max(1, len(images))


def reverse_trigger(model: nn.Module, images: torch.Tensor, label: int, *, steps: int = 300,
                    lr: float = 0.1, init_cost: float = 1e-3, success_threshold: float = 0.98,
                    batch_size: int = 64, patience: int = 3, check_every: int = 10,
                    seed: int = 0) -> ClassTrigger:
    """Search the smallest mask sending ``images`` to ``label`` (model in eval mode, frozen).

    Loss = CE(model(x'), label) + cost × ‖m‖₁ with tanh-parametrised mask and pattern, Adam
    (lr, betas 0.5/0.9). Cost schedule, simplified from the reference (which counts epochs):
    every ``check_every`` steps the mean batch success is compared with ``success_threshold``;
    after ``patience`` successful checks in a row the cost doubles, after ``patience`` failed
    ones it is divided by 2^1.5. The kept trigger is the smallest-norm one among steps whose
    batch success reached the threshold (the last one if none did).
    """
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed * 1000 + label)
    height, width = images.shape[-2:]
    mask_raw = _unsquash(torch.rand(1, height, width, generator=generator)).to(device)
    pattern_raw = _unsquash(torch.rand(3, height, width, generator=generator)).to(device)
    mask_raw.requires_grad_(True)
    pattern_raw.requires_grad_(True)
    optimizer = torch.optim.Adam([mask_raw, pattern_raw], lr=lr, betas=(0.5, 0.9))
    cost, up, down = init_cost, 0, 0
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    window: list[float] = []
    target = torch.full((batch_size,), label, dtype=torch.long, device=device)
    order = torch.randperm(len(images), generator=generator)
    for step in range(steps):
        start = (step * batch_size) % len(images)
        index = order[start:start + batch_size]
        if len(index) < batch_size:
            order = torch.randperm(len(images), generator=generator)
            index = order[:batch_size]
        x = images[index].to(device)
        mask, pattern = _squash(mask_raw), _squash(pattern_raw)
        logits = model((1 - mask) * x + mask * pattern)
        norm = mask.sum()
        loss = F.cross_entropy(logits, target[:len(x)]) + cost * norm
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        success = float((logits.argmax(1) == label).float().mean())
        window.append(success)
        if success >= success_threshold and (best is None or float(norm.detach()) < best[0]):
            best = (float(norm.detach()), mask.detach().clone(), pattern.detach().clone())
        if (step + 1) % check_every == 0:
            reached = float(np.mean(window)) >= success_threshold
            window = []
            up, down = (up + 1, 0) if reached else (0, down + 1)
            if up >= patience:
                cost, up = cost * 2, 0
            elif down >= patience:
                cost, down = cost / 2 ** 1.5, 0
    reached = best is not None
    if best is None:
        with torch.no_grad():
            mask, pattern = _squash(mask_raw), _squash(pattern_raw)
        best = (float(mask.sum()), mask.detach().clone(), pattern.detach().clone())
    norm, mask, pattern = best
    success = _success(model, images, mask, pattern, label, 256)
    return ClassTrigger(label, mask.cpu(), pattern.cpu(), norm, success, reached)


def neural_cleanse(model: nn.Module, images: torch.Tensor, num_classes: int, *,
                   steps: int = 300, lr: float = 0.1, init_cost: float = 1e-3,
                   success_threshold: float = 0.98, batch_size: int = 64, seed: int = 0,
                   classes: list[int] | None = None,
                   anomaly_threshold: float = 2.0) -> TriggerScan:
    """Reverse a trigger for every class (or ``classes``) and flag the outliers.

    Anomaly index = (median − L1) / (1.4826 × MAD) over the scanned classes' mask L1 norms;
    classes above ``anomaly_threshold`` (2 in the paper) on the small side are flagged. The
    caller's model is not modified (a frozen eval-mode copy is used). ``steps`` trades speed
    for quality: 300 steps of 64 images per class takes a few seconds on a small CNN on CPU.
    """
    torch.manual_seed(seed)
    frozen = copy.deepcopy(model).eval()
    frozen.requires_grad_(False)
    labels = list(range(num_classes)) if classes is None else list(classes)
    triggers = [reverse_trigger(frozen, images, label, steps=steps, lr=lr, init_cost=init_cost,
                                success_threshold=success_threshold, batch_size=batch_size,
                                seed=seed) for label in labels]
    norms = {t.label: t.l1_norm for t in triggers}
    index = anomaly_indices(norms)
    flagged = sorted((c for c in labels if index[c] > anomaly_threshold), key=lambda c: -index[c])
    return TriggerScan(triggers, index, flagged, anomaly_threshold, norms)


def trigger_image(mask: torch.Tensor, pattern: torch.Tensor) -> np.ndarray:
    """The mask-weighted pattern as an ``[H, W, 3]`` uint8 image (black where the mask is 0)."""
    image = (mask.detach().cpu() * pattern.detach().cpu()).clamp(0, 1)
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
