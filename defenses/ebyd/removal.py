"""Backdoor removal by Reconstructive Neuron Pruning (RNP; Li, Lyu, Ma, Koren, Lyu, Li, Jiang
2023, "Reconstructive Neuron Pruning for Backdoor Defense", ICML, arXiv:2305.14876).

1. Unlearn: gradient ascent (SGD) on clean data until the clean accuracy drops to a threshold;
   neurons carrying clean features are disrupted, the backdoor ones much less.
2. Recover: on the unlearned model, learn one mask value in [0, 1] per channel (all weights
   frozen) to bring the clean accuracy back. Backdoor neurons do not help clean accuracy and
   are pushed towards 0.
3. Prune: zero the original model's channels whose mask is under a threshold.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defenses.ebyd.metrics import accuracy, model_device


@dataclass
class PruningResult:
    """The pruned copy of the original model (eval mode) and what was pruned."""

    model: nn.Module
    pruned: list[tuple[str, int]]  # (module name, channel)
    mask_values: dict  # summary: count, min, mean, per-layer minimum, lowest entries
    unlearn_epochs: int
    unlearn_accuracy: float  # train accuracy of the last unlearning epoch
    masked_layers: list[str]


def maskable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every BatchNorm2d of the model; its Conv2d layers when it has no BatchNorm2d."""
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    return bns or [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _num_channels(module: nn.Module) -> int:
    return module.num_features if isinstance(module, nn.BatchNorm2d) else module.out_channels


@contextmanager
def channel_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> Iterator[None]:
    """Multiply the output of each named layer by its per-channel mask while in the context."""
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(
        lambda _m, _i, out, mask=mask: out * mask.view(1, -1, 1, 1))
        for name, mask in masks.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _epoch(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def unlearn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, lr: float = 0.01,
            stop_accuracy: float = 0.20, max_epochs: int = 100, batch_size: int = 128,
            generator: torch.Generator) -> tuple[int, float]:
    """RNP step 1, in place: SGD (momentum 0.9, wd 5e-4) ascent on the cross-entropy, gradient
    norm clipped at 20, until the train accuracy is ≤ ``stop_accuracy``.

    The reference checks the running accuracy once an epoch; we check each batch's accuracy
    (measured in the forward pass before its update), which stops within one step of the
    collapse: on a small clean set one more epoch of ascent can wreck the model (cross-entropy
    in the hundreds), and the masks can then only recover by switching whole layers off.
    Returns (epochs run, possibly partial, and the last batch's train accuracy)."""
    device = model_device(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    batch_accuracy = 1.0
    for epoch in range(1, max_epochs + 1):
        for index in _epoch(len(images), batch_size, generator):
            x, y = images[index].to(device), labels[index].to(device)
            logits = model(x)
            batch_accuracy = float((logits.argmax(1) == y).float().mean())
            if batch_accuracy <= stop_accuracy:
                return epoch, batch_accuracy
            optimizer.zero_grad()
            (-F.cross_entropy(logits, y)).backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=20.0)
            optimizer.step()
    return max_epochs, batch_accuracy


def learn_masks(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                lr: float = 0.2, epochs: int = 20, alpha: float = 0.2, batch_size: int = 128,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
    """RNP step 2: per-channel masks (init 1, clipped to [0, 1]) on :func:`maskable_layers`
    trained with SGD (momentum 0.9) on α × CE to recover clean accuracy; weights frozen, model
    in train mode as in the reference (batch statistics in BatchNorm).

    Simplification: the reference's α only scales the loss (a learning-rate factor); its mask
    also multiplies only the BN weight, while ours multiplies the whole channel output (weight
    and bias), which is exactly what pruning removes."""
    device = model_device(model)
    model.requires_grad_(False)
    masks = {name: torch.ones(_num_channels(module), device=device, requires_grad=True)
             for name, module in maskable_layers(model)}
    optimizer = torch.optim.SGD(list(masks.values()), lr=lr, momentum=0.9)
    model.train()
    with channel_masks(model, masks):
        for _ in range(epochs):
            for index in _epoch(len(images), batch_size, generator):
                x, y = images[index].to(device), labels[index].to(device)
                optimizer.zero_grad()
                (alpha * F.cross_entropy(model(x), y)).backward()
                optimizer.step()
                with torch.no_grad():
                    for mask in masks.values():
                        mask.clamp_(0.0, 1.0)
    return {name: mask.detach().cpu() for name, mask in masks.items()}


@torch.no_grad()
def prune_channels(model: nn.Module, channels: list[tuple[str, int]]) -> None:
    """Make each (layer, channel) output exactly 0, in place: BN weight and bias set to 0, or
    for a Conv2d its filter and bias."""
    modules = dict(model.named_modules())
    for name, channel in channels:
        module = modules[name]
        module.weight[channel] = 0.0
        if module.bias is not None:
            module.bias[channel] = 0.0


def _summary(masks: dict[str, torch.Tensor], lowest: int = 10) -> dict:
    flat = [(name, c, float(v)) for name, mask in masks.items() for c, v in enumerate(mask)]
    values = np.array([v for _, _, v in flat])
    return {
        "count": len(flat), "min": float(values.min()), "mean": float(values.mean()),
        "per_layer_min": {name: float(mask.min()) for name, mask in masks.items()},
        "lowest": [{"layer": n, "channel": c, "mask": round(v, 4)}
                   for n, c, v in sorted(flat, key=lambda item: item[2])[:lowest]],
    }


def _within_accuracy(model: nn.Module, ordered: list[tuple[str, int]], images: torch.Tensor,
                     labels: torch.Tensor, max_drop: float,
                     chunks: int = 20) -> list[tuple[str, int]]:
    """The longest prefix of ``ordered`` (in steps of ~1/``chunks``) whose pruning keeps clean
    accuracy within ``max_drop`` of the unpruned model's."""
    baseline = accuracy(model, images, labels)
    step = max(1, len(ordered) // chunks)
    kept = 0
    for end in range(step, len(ordered) + step, step):
        trial = copy.deepcopy(model)
        prune_channels(trial, ordered[:min(end, len(ordered))])
        if baseline - accuracy(trial.eval(), images, labels) > max_drop:
            break
        kept = min(end, len(ordered))
    return ordered[:kept]


def reconstructive_neuron_pruning(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                                  *, unlearn_lr: float = 0.01,
                                  unlearn_stop_accuracy: float = 0.20,
                                  unlearn_max_epochs: int = 100, mask_lr: float = 0.2,
                                  mask_epochs: int = 20, alpha: float = 0.2,
                                  prune_threshold: float = 0.2, batch_size: int = 128,
                                  max_accuracy_drop: float | None = None,
                                  seed: int = 0) -> PruningResult:
    """RNP: unlearn a copy, learn channel masks on it, prune the original's masked-out channels.

    Defaults are the reference's (SGD lr 0.01 to accuracy ≤ 0.20; masks lr 0.2, α 0.2,
    20 epochs; prune masks < 0.2). The caller's model is not modified: both the unlearned and
    the pruned models are copies. With ``max_accuracy_drop``, channels are pruned lowest mask
    first, and pruning stops before accuracy on the given clean images falls by more than that
    (small models have little redundancy; the lowest masks carry the backdoor).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    unlearned = copy.deepcopy(model)
    epochs, train_accuracy = unlearn(unlearned, images, labels, lr=unlearn_lr,
                                     stop_accuracy=unlearn_stop_accuracy,
                                     max_epochs=unlearn_max_epochs, batch_size=batch_size,
                                     generator=generator)
    masks = learn_masks(unlearned, images, labels, lr=mask_lr, epochs=mask_epochs, alpha=alpha,
                        batch_size=batch_size, generator=generator)
    candidates = sorted(((float(mask[c]), name, c) for name, mask in masks.items()
                         for c in torch.nonzero(mask < prune_threshold).flatten().tolist()))
    pruned = [(name, c) for _, name, c in candidates]
    if max_accuracy_drop is not None:
        pruned = _within_accuracy(model, pruned, images, labels, max_accuracy_drop)
    result = copy.deepcopy(model)
    prune_channels(result, pruned)
    result.eval()
    return PruningResult(result, pruned, _summary(masks), epochs, train_accuracy, list(masks))


def unlearn_trigger(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    mask: torch.Tensor, pattern: torch.Tensor, **fine_tuning) -> nn.Module:
    """Neural Cleanse's mitigation: fine-tune a copy on clean images, part of each batch
    carrying the reversed trigger (``mask``, ``pattern``) with its TRUE label, so the trigger
    stops meaning the target (Wang et al. 2019, "unlearning"). EBYD: a trigger reversed on the
    exposed model is closer to the real one, which is what makes this work.
    ``fine_tuning``: settings of :func:`fine_tune_with_stamps`."""
    mask, pattern = mask.detach().cpu(), pattern.detach().cpu()
    stamped = (1 - mask) * images + mask * pattern
    return fine_tune_with_stamps(model, images, labels, stamped, **fine_tuning)


def fine_tune_with_stamps(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                          stamped: torch.Tensor, *, epochs: int = 10, lr: float = 1e-3,
                          stamp_fraction: float = 0.2, batch_size: int = 32,
                          seed: int = 0) -> nn.Module:
    """Fine-tune a copy of ``model`` on ``inputs`` at their ``labels``, the first
    ``stamp_fraction`` of each batch replaced by its row of ``stamped`` (the same inputs with
    the trigger: a stamped image, or a text with the trigger word inserted), still at the true
    label. One loop for every modality: ``inputs`` and ``stamped`` are whatever the model takes
    (images ``[N, 3, H, W]``, or packed token ids ``[N, 2, L]``)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    repaired = copy.deepcopy(model)
    device = model_device(repaired)
    optimizer = torch.optim.Adam(repaired.parameters(), lr=lr)
    repaired.train()
    for _ in range(epochs):
        for batch in _epoch(len(labels), batch_size, generator):
            x, y = inputs[batch].clone(), labels[batch].to(device)
            count = max(1, int(stamp_fraction * len(batch)))
            x[:count] = stamped[batch[:count]]
            loss = F.cross_entropy(repaired(x.to(device)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return repaired.eval()
