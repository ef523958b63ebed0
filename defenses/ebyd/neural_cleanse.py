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
PASS_PIXELS = 2 ** 20  # image pixels one joint pass may hold: 16 labels × 64 images of 32×32


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
    """The smallest mask sending ``images`` to ``label`` (``reverse_triggers`` for one label)."""
    return reverse_triggers(model, images, [label], steps=steps, lr=lr, init_cost=init_cost,
                            success_threshold=success_threshold, batch_size=batch_size,
                            patience=patience, check_every=check_every, seed=seed)[0]


class _Search:
    """One label's search state: its seeded draws, cost schedule and best trigger so far."""

    def __init__(self, label: int, images: torch.Tensor, init_cost: float, seed: int) -> None:
        self.label = label
        self.generator = torch.Generator().manual_seed(seed * 1000 + label)
        height, width = images.shape[-2:]
        self.mask_start = _unsquash(torch.rand(1, height, width, generator=self.generator))
        self.pattern_start = _unsquash(torch.rand(3, height, width, generator=self.generator))
        self.order = torch.randperm(len(images), generator=self.generator)
        self.cost, self.up, self.down = init_cost, 0, 0
        self.best: tuple[float, torch.Tensor, torch.Tensor] | None = None
        self.window: list[float] = []

    def batch(self, step: int, batch_size: int, count: int) -> torch.Tensor:
        """The image indices of ``step``: the label's own shuffled order, redrawn when spent."""
        start = (step * batch_size) % count
        index = self.order[start:start + batch_size]
        if len(index) < batch_size:
            self.order = torch.randperm(count, generator=self.generator)
            index = self.order[:batch_size]
        return index

    def record(self, success: float, norm: float, mask: torch.Tensor, pattern: torch.Tensor,
               threshold: float) -> None:
        self.window.append(success)
        if success >= threshold and (self.best is None or norm < self.best[0]):
            self.best = (norm, mask.detach().clone(), pattern.detach().clone())

    def schedule(self, threshold: float, patience: int) -> None:
        """Every ``check_every`` steps: double the cost after ``patience`` successful checks in
        a row, divide it by 2^1.5 after ``patience`` failed ones."""
        reached = float(np.mean(self.window)) >= threshold
        self.window = []
        self.up, self.down = (self.up + 1, 0) if reached else (0, self.down + 1)
        if self.up >= patience:
            self.cost, self.up = self.cost * 2, 0
        elif self.down >= patience:
            self.cost, self.down = self.cost / 2 ** 1.5, 0


def reverse_triggers(model: nn.Module, images: torch.Tensor, labels: list[int], *,
                     steps: int = 300, lr: float = 0.1, init_cost: float = 1e-3,
                     success_threshold: float = 0.98, batch_size: int = 64, patience: int = 3,
                     check_every: int = 10, seed: int = 0) -> list[ClassTrigger]:
    """Search, for each of ``labels``, the smallest mask sending ``images`` to it (model in eval
    mode, frozen).

    Loss = CE(model(x'), label) + cost × ‖m‖₁ with tanh-parametrised mask and pattern, Adam
    (lr, betas 0.5/0.9). Cost schedule, simplified from the reference (which counts epochs):
    every ``check_every`` steps the mean batch success is compared with ``success_threshold``;
    after ``patience`` successful checks in a row the cost doubles, after ``patience`` failed
    ones it is divided by 2^1.5. The kept trigger is the smallest-norm one among steps whose
    batch success reached the threshold (the last one if none did).

    The labels' searches are independent (each has its own seeded draws, cost and Adam
    state, and its loss touches only its own mask and pattern); they share each forward pass,
    which on a small model is several times faster than one pass per label.
    """
    device = model_device(model)
    searches = [_Search(label, images, init_cost, seed) for label in labels]
    mask_raw = torch.stack([s.mask_start for s in searches]).to(device).requires_grad_(True)
    pattern_raw = torch.stack([s.pattern_start for s in searches]).to(device)
    pattern_raw.requires_grad_(True)
    optimizer = torch.optim.Adam([mask_raw, pattern_raw], lr=lr, betas=(0.5, 0.9))
    label_ids = torch.tensor(labels, device=device)
    for step in range(steps):
        x = torch.stack([images[s.batch(step, batch_size, len(images))] for s in searches])
        mask, pattern = _squash(mask_raw), _squash(pattern_raw)
        stamped = (1 - mask[:, None]) * x.to(device) + mask[:, None] * pattern[:, None]
        logits = model(stamped.flatten(0, 1))
        target = label_ids.repeat_interleave(x.shape[1])  # fewer images than a batch: all
        cross_entropy = F.cross_entropy(logits, target, reduction="none")
        norms = mask.flatten(1).sum(1)
        costs = torch.tensor([s.cost for s in searches], device=device)
        loss = (cross_entropy.view(len(searches), -1).mean(1) + costs * norms).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        hits = (logits.argmax(1) == target).float().view(len(searches), -1).mean(1).tolist()
        for i, (search, norm) in enumerate(zip(searches, norms.detach().tolist())):
            search.record(hits[i], norm, mask[i], pattern[i], success_threshold)
            if (step + 1) % check_every == 0:
                search.schedule(success_threshold, patience)
    triggers = []
    for i, search in enumerate(searches):
        reached = search.best is not None
        if search.best is None:
            with torch.no_grad():
                last_mask, last_pattern = _squash(mask_raw[i]), _squash(pattern_raw[i])
            search.best = (float(last_mask.sum()), last_mask.clone(), last_pattern.clone())
        norm, best_mask, best_pattern = search.best
        success = _success(model, images, best_mask, best_pattern, search.label, 256)
        triggers.append(ClassTrigger(search.label, best_mask.cpu(), best_pattern.cpu(), norm,
                                     success, reached))
    return triggers


def neural_cleanse(model: nn.Module, images: torch.Tensor, num_classes: int, *,
                   steps: int = 300, lr: float = 0.1, init_cost: float = 1e-3,
                   success_threshold: float = 0.98, batch_size: int = 64, seed: int = 0,
                   classes: list[int] | None = None, anomaly_threshold: float = 2.0,
                   labels_per_pass: int | None = None) -> TriggerScan:
    """Reverse a trigger for every class (or ``classes``) and flag the outliers.

    Anomaly index = (median − L1) / (1.4826 × MAD) over the scanned classes' mask L1 norms;
    classes above ``anomaly_threshold`` (2 in the paper) on the small side are flagged. The
    caller's model is not modified (a frozen eval-mode copy is used). ``steps`` trades speed
    for quality: 300 steps of 64 images per class takes a few seconds on a small CNN on CPU.
    ``labels_per_pass`` classes are searched together (``reverse_triggers``), so one forward
    pass holds ``labels_per_pass × batch_size`` images; by default as many as keep a pass
    within ``PASS_PIXELS`` image pixels (one at a time for 224×224 images).
    """
    torch.manual_seed(seed)
    frozen = copy.deepcopy(model).eval()
    frozen.requires_grad_(False)
    labels = list(range(num_classes)) if classes is None else list(classes)
    if labels_per_pass is None:
        height, width = images.shape[-2:]
        labels_per_pass = max(1, PASS_PIXELS // (batch_size * height * width))
    triggers = []
    for start in range(0, len(labels), labels_per_pass):
        triggers += reverse_triggers(frozen, images, labels[start:start + labels_per_pass],
                                     steps=steps, lr=lr, init_cost=init_cost,
                                     success_threshold=success_threshold,
                                     batch_size=batch_size, seed=seed)
    norms = {t.label: t.l1_norm for t in triggers}
    index = anomaly_indices(norms)
    flagged = sorted((c for c in labels if index[c] > anomaly_threshold), key=lambda c: -index[c])
    return TriggerScan(triggers, index, flagged, anomaly_threshold, norms)


def trigger_image(mask: torch.Tensor, pattern: torch.Tensor) -> np.ndarray:
    """The mask-weighted pattern as an ``[H, W, 3]`` uint8 image (black where the mask is 0)."""
    image = (mask.detach().cpu() * pattern.detach().cpu()).clamp(0, 1)
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
