"""Backdoor exposure by Clean Unlearning (CUL) and backdoor detection on the exposed model.

EBYD — "Expose Before You Defend: Unifying and Enhancing Backdoor Defenses via Exposed Models"
(Li, Huang, Zhang, Ma, Jiang 2024, arXiv:2410.19427). Gradient *ascent* on a small clean set
unlearns the clean features; the backdoor features survive, so the exposed model predicts the
backdoor target for most clean inputs. The class the predictions collapse onto is the backdoor
label, and the variance of the per-class prediction shares (VAR) tells a backdoored model from a
clean one (VAR > 0.01 in the paper; all predictions on one of 10 classes gives 0.09).
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defenses.ebyd.metrics import accuracy, model_device, prediction_shares


@dataclass
class CleanUnlearningResult:
    """The exposed copy (eval mode) and the per-epoch record (epoch 0 = before unlearning)."""

    model: nn.Module
    history: list[dict]
    epochs_run: int
    stopped_early: bool  # stopped by accuracy or total collapse (at or before max_epochs)

    @property
    def final_shares(self) -> np.ndarray:
        """Per-class prediction shares of the exposed model on the clean set."""
        return np.asarray(self.history[-1]["shares"])


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


def _record(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epoch: int,
            num_classes: int) -> dict:
    return {"epoch": epoch, "clean_accuracy": accuracy(model, images, labels),
            "shares": prediction_shares(model, images, num_classes).tolist()}


def _num_classes(model: nn.Module, images: torch.Tensor) -> int:
    with torch.no_grad():
        was_training = model.training
        model.eval()
        classes = model(images[:1].to(model_device(model))).shape[1]
        model.train(was_training)
    return int(classes)


def _done(record: dict, stop_accuracy: float) -> bool:
    """Accuracy under the stop, or every clean input on one class (with few classes a total
    collapse can leave accuracy above the stop; more ascent then changes nothing we read)."""
    return record["clean_accuracy"] < stop_accuracy or max(record["shares"]) >= 0.99


def clean_unlearning(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                     lr: float = 1e-4, weight_decay: float = 5e-4, batch_size: int = 128,
                     max_epochs: int = 20, stop_accuracy: float = 0.20, seed: int = 0,
                     quiet: bool = True) -> CleanUnlearningResult:
    """Clean Unlearning: maximise the cross-entropy of a copy of ``model`` on the clean set.

    ``images`` is whatever the model takes (images, or packed token ids of texts through
    ``redteam.core.text_classifiers.TokenClassifier``): one loop for every modality.

    Adam with ``lr``/``weight_decay``, gradient norm clipped at 20, model in train mode (as in
    the reference). The reference runs lr 1e-5 on a CIFAR ResNet-18 with 500 images (4 steps an
    epoch, 20 epochs). The default 1e-4 is a middle ground for pretrained models of moderate
    size; a tiny CNN with 300 clean images needs about 1e-3 to collapse within 20 epochs (the
    tests use 1e-3), and large pretrained models may want the reference's 1e-5. Clean
    accuracy and prediction shares are measured on the clean set (eval mode) after every
    epoch; unlearning stops as soon as accuracy falls under ``stop_accuracy`` (RNP's 0.20),
    or every clean input is predicted as one class, rather than after a fixed count.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    exposed = copy.deepcopy(model)
    device = model_device(exposed)
    num_classes = _num_classes(exposed, images)
    optimizer = torch.optim.Adam(exposed.parameters(), lr=lr, weight_decay=weight_decay)
    history = [_record(exposed, images, labels, 0, num_classes)]
    stopped = history[0]["clean_accuracy"] < stop_accuracy
    epoch = 0
    while not stopped and epoch < max_epochs:
        epoch += 1
        exposed.train()
        for index in _batches(len(images), batch_size, generator):
            x, y = images[index].to(device), labels[index].to(device)
            optimizer.zero_grad()
            (-F.cross_entropy(exposed(x), y)).backward()
            nn.utils.clip_grad_norm_(exposed.parameters(), max_norm=20.0)
            optimizer.step()
        history.append(_record(exposed, images, labels, epoch, num_classes))
        stopped = _done(history[-1], stop_accuracy)
        if not quiet:
            top = int(np.argmax(history[-1]["shares"]))
            print(f"CUL epoch {epoch}: clean accuracy {history[-1]['clean_accuracy']:.3f}, "
                  f"top class {top} share {history[-1]['shares'][top]:.3f}")
    exposed.eval()
    return CleanUnlearningResult(exposed, history, epoch, stopped)


def history_csv(history: list[dict]) -> str:
    """The CUL history as CSV: ``epoch,clean_accuracy,share_0,...,share_{C-1}``."""
    num_classes = len(history[0]["shares"]) if history else 0
    out = io.StringIO()
    out.write(",".join(["epoch", "clean_accuracy", *(f"share_{c}" for c in range(num_classes))]))
    out.write("\n")
    for row in history:
        values = [str(row["epoch"]), f"{row['clean_accuracy']:.4f}",
                  *(f"{s:.4f}" for s in row["shares"])]
        out.write(",".join(values) + "\n")
    return out.getvalue()


@dataclass
class BackdoorVerdict:
    """The collapse of the exposed model's prediction shares onto one label.

    ``var`` is EBYD's VAR (variance of the shares: how far from uniform); ``flagged`` when it
    is over ``var_threshold`` (EBYD's 0.01). ``margin`` (the top share minus the second) is
    reported, not decided on: gradient ascent can also drive a *clean* model onto a few
    classes, and what tells a backdoor's collapse apart is that repeats on random subsets
    land on the same label (:func:`collapse_consistency`), which the caller checks.
    """

    flagged: bool
    target_label: int
    target_share: float
    var: float
    var_threshold: float
    margin: float
    shares: list[float] = field(default_factory=list)


def share_margin(shares: np.ndarray) -> float:
    """Largest prediction share minus the second largest (0 for fewer than two classes)."""
    ordered = np.sort(np.asarray(shares, dtype=float))[::-1]
    return float(ordered[0] - ordered[1]) if len(ordered) > 1 else 0.0


def detect_backdoor(shares: np.ndarray, var_threshold: float = 0.01) -> BackdoorVerdict:
    """EBYD's detection: the exposed model's shares ``shares`` (per class, on clean data)
    flag a backdoor when their VAR exceeds ``var_threshold``; the label with the largest share
    is the backdoor label."""
    shares = np.asarray(shares, dtype=float)
    target = int(np.argmax(shares))
    var = float(np.var(shares))
    return BackdoorVerdict(
        flagged=var > var_threshold, target_label=target, target_share=float(shares[target]),
        var=var, var_threshold=var_threshold, margin=share_margin(shares),
        shares=shares.tolist())


@dataclass
class CollapseConsistency:
    """Which label each repeated exposure collapsed onto, and how many agree with the most
    common one. A backdoor's target is a property of the model, so every repeat finds it; a
    clean model collapses onto whatever class the unlearning's randomness favours."""

    labels: list[int]
    mode: int
    agreement: float  # share of repeats whose collapse label is ``mode``


def collapse_consistency(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                         repeats: int = 4, fraction: float = 0.75, seed: int = 0,
                         **unlearning) -> CollapseConsistency:
    """Repeat clean unlearning on ``repeats`` random ``fraction`` subsets (other seeds) and
    record each exposed model's top label. ``unlearning``: settings of ``clean_unlearning``."""
    found = []
    for repeat in range(repeats):
        generator = torch.Generator().manual_seed(seed * 1000 + repeat + 1)
        subset = torch.randperm(len(labels), generator=generator)[:max(1, int(fraction *
                                                                              len(labels)))]
        result = clean_unlearning(model, images[subset], labels[subset],
                                  seed=seed * 1000 + repeat + 1, **unlearning)
        found.append(int(np.argmax(result.final_shares)))
    mode = max(set(found), key=found.count)
    return CollapseConsistency(labels=found, mode=mode, agreement=found.count(mode) / len(found))
