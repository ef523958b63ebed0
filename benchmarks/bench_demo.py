"""Where ``redteam demo`` spends its time, part by part, from an empty cache (printed, never
asserted).

The demo runs exactly as ``make demo`` runs it (``redteam.demo.run_demo``, demo size, seed 0),
into a temporary folder and with a temporary ``REDTEAM_HOME``, so every zoo model is built.
Each part of the demo is timed where ``run_demo`` calls it; the table gives its seconds and its
share of the whole. Building the unlearning zoo is its own row; the rest of the run (the seven
audits of its variants, writing the index) is the row after it.

Run: ``make bench-demo`` (as long as the demo itself: about 9.5 minutes on 2 CPU cores).
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redteam.demo as demo
import redteam.zoo as zoo
from redteam.core.training import DEMO_THREADS

PARTS = ("benchmark_demo", "instruct_demo", "backdoor_demo", "text_backdoor_demo",
         "adversarial_demo", "protection_demo", "safety_demo", "concept_demo")


def timed(function: Callable, seconds: dict[str, float], name: str) -> Callable:
    """``function``, adding the seconds of each call to ``seconds[name]``."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def main() -> None:
    seconds: dict[str, float] = {}
    for name in PARTS:
        setattr(demo, name, timed(getattr(demo, name), seconds, name))
    zoo.build_unlearning_zoo = timed(zoo.build_unlearning_zoo, seconds, "unlearning zoo")
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as out:
        os.environ["REDTEAM_HOME"] = home
        start = time.perf_counter()
        demo.run_demo(Path(out) / "demo", quiet=True)
        total = time.perf_counter() - start
    rows = {"unlearning zoo": seconds.pop("unlearning zoo")}
    rows["variant audits, index"] = total - rows["unlearning zoo"] - sum(seconds.values())
    rows.update(seconds)
    print(f"redteam demo from an empty cache, {DEMO_THREADS} threads: {total:.0f} s")
    print(f"{'part':<22}{'seconds':>9}{'share':>8}")
    for name, value in rows.items():
        print(f"{name.removesuffix('_demo'):<22}{value:>9.1f}{value / total:>8.0%}")


if __name__ == "__main__":
    main()
