"""The optimiser step shared by every training loop (demo zoo, unlearning methods), the plain
supervised training of an image classifier (demo zoo, protection evaluation), and the fixed
thread count the demo trains with.

Loops go through ``accelerate.Accelerator`` (docs/guides/auditing-llms.md, "Auditing a 7B/70B
model"); this keeps the step itself (backward, gradient clipping, update, schedule, progress)
written once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from weakref import WeakKeyDictionary

import numpy as np
import torch
from torch import nn

from redteam.core.errors import InputError
from redteam.core.weights import first_non_finite


class TrainingDiverged(InputError):
    """A training run whose loss or weights stopped being finite (a learning rate too large, a
    hyper-parameter that makes the loss explode): nothing is written, and the line says when."""


def check_loss(loss: torch.Tensor, step: int) -> float:
    """The loss as a float; refused from the first step it is NaN or infinite."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDiverged(f"training diverged at step {step}: the loss is {value} (lower "
                               f"the learning rate or check the hyper-parameters); nothing was "
                               f"written")
    return value


def check_trained(model: nn.Module, what: str) -> None:
    """Refuse to save a model whose weights are no longer finite (a finite last loss does not
    prove the last update was)."""
    name = first_non_finite(model)
    if name is not None:
        raise TrainingDiverged(f"{what} diverged: {name} is NaN or inf after training (lower the "
                               f"learning rate or check the hyper-parameters); nothing was "
                               f"written")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (before each probe and training)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


DEMO_THREADS = 2  # the intra-op threads every demo model is trained and audited with


@contextmanager
def fixed_threads(count: int = DEMO_THREADS) -> Iterator[None]:
    """Run the block (or the decorated function) on ``count`` intra-op threads, then give the
    caller back its own count.

    A model trained on another number of threads is another model: torch splits its sums
    between the threads, the rounding differs, and after a few hundred steps so do the weights.
    Near a threshold that changes verdicts: the demo's LM zoo trained and audited on one thread
    instead of two gave another status or severity in 23 of its 110 findings (pass against
    fail in 11). So the demo and its zoo always use ``DEMO_THREADS``, whatever the machine's
    cores.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_STEPS: WeakKeyDictionary = WeakKeyDictionary()  # optimiser -> steps taken (progress may be off)


def optimizer_step(accelerator, params, optimizer, loss, progress, scheduler=None,
                   max_grad_norm: float = 1.0) -> None:
    """Backward ``loss``, clip, update (and advance ``scheduler``), report on ``progress``;
    a loss that is not finite stops the run (``TrainingDiverged``) before it reaches the
    weights."""
    _STEPS[optimizer] = _STEPS.get(optimizer, 0) + 1
    value = check_loss(loss, _STEPS[optimizer])
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    progress.update(1)
    progress.set_postfix(loss=f"{value:.3f}", refresh=False)


def finish_training(accelerator, model, progress):
    """Close the progress bar and return the unwrapped model in eval mode."""
    progress.close()
    model = accelerator.unwrap_model(model)
    model.eval()
    return model


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                     epochs: int, lr: float = 3e-3, batch_size: int = 64, seed: int = 0,
                     augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None
                     = None, quiet: bool = True) -> nn.Module:
    """Plain supervised training (Adam, cross-entropy), through ``accelerate``; ``augment``
    (e.g. ``vision.random_crop_flip``) transforms each batch, drawing from a seeded generator."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    progress = tqdm(total=steps, desc="train classifier", disable=quiet, leave=False)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            batch = order[start:start + batch_size]
            x = images[batch] if augment is None else augment(images[batch], generator)
            x, y = x.to(accelerator.device), labels[batch].to(accelerator.device)
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer_step(accelerator, model.parameters(), optimizer, loss, progress, schedule)
    return finish_training(accelerator, model, progress)
