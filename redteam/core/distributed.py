"""Several processes through accelerate: ``accelerate launch -m redteam audit …``.

Every process loads the models and runs every probe, so all of them take the same decisions;
what is split is the expensive part, the scorer's batches of likelihoods and generations
(``share_batches``): whole batches go round-robin to the processes and the results are
gathered back in order, so each batch is computed exactly as in a one-process run and the
findings are the same. Training inside a probe (the relearning attack) runs on every process on
the same data: accelerate averages identical gradients, which changes nothing. Only the main
process writes the run folder (docs/guides/auditing-llms.md, "Auditing a 7B/70B model").

Outside ``accelerate launch`` (no ``WORLD_SIZE`` above 1) nothing here touches
``torch.distributed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def launched() -> bool:
    """Whether this process is one of several started by ``accelerate launch`` (or torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@cache
def _state():
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())  # gloo between CPU processes


def process_count() -> int:
    return _state().num_processes if launched() else 1


def process_index() -> int:
    return _state().process_index if launched() else 0


def is_main_process() -> bool:
    return process_index() == 0


def process_device(device: str) -> str:
    """The device of this process: each process of a multi-GPU launch has its own GPU."""
    if device == "cuda" and launched():
        return f"cuda:{_state().local_process_index}"
    return device


def wait_for_everyone() -> None:
    if launched():
        _state().wait_for_everyone()


def share_batches(batches: Sequence[Sequence[Item]],
                  compute: Callable[[Sequence[Item]], list[Result]]) -> list[list[Result]]:
    """``compute`` of every batch, in order; with several processes each computes the batches
    ``i`` with ``i % processes == index`` and the results are gathered on all of them."""
    count = process_count()
    if count == 1:
        return [compute(batch) for batch in batches]
    from accelerate.utils import gather_object

    index = process_index()
    mine = [(i, compute(batch)) for i, batch in enumerate(batches) if i % count == index]
    gathered: list[tuple[int, Any]] = gather_object(mine)
    by_index = dict(gathered)
    return [by_index[i] for i in range(len(batches))]
