"""Protecting an image folder: images/s of each method, printed side by side.

Printed, never asserted: surrogate feature extraction batched vs one image at a time (the same
encoder, the same images), and the whole ``redteam protect`` of the digits demo folder with each
method: Unlearnable Clusters with the demo's surrogate, Unlearnable Clusters with its label-free
default surrogate, and the default (error-minimising noise, no surrogate). Target: the default
protects the 900 demo digits in under a minute on 2 CPU cores. Last, ``redteam
evaluate-protection`` of two of those copies, each run with a cache of its own vs one cache
shared by both (``engine.ModelCache``, as the demo does): the learner is trained on the clean
folder once per probe instead of once per run, with the same accuracies.

Run: ``make bench`` (builds the protection zoo on first use).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from defenses.unlearnable_clusters import embed
from redteam.commands.evaluate_protection import ProtectionEvaluationRequest, evaluate_protection
from redteam.commands.protect import load_surrogate, protect_folder
from redteam.core.vision import images_tensor, list_image_files, read_resized
from redteam.engine import ModelCache
from redteam.zoo.protection import build_protection_zoo

EVALUATION_EPOCHS = 3  # the learner's, kept short: the ratio is what is printed


def main() -> None:
    zoo = build_protection_zoo(size="demo")
    encoder, _ = load_surrogate(zoo["surrogate"])
    files = list_image_files(zoo["publish"])
    images = images_tensor([read_resized(f, encoder.size) for f in files])
    print(f"surrogate features of {len(images)} digits (32x32), torch threads "
          f"{torch.get_num_threads()}")
    start = time.perf_counter()
    batched = embed(encoder, images, batch_size=128)
    batched_rate = len(images) / (time.perf_counter() - start)
    start = time.perf_counter()
    single = torch.cat([embed(encoder, images[i:i + 1]) for i in range(len(images))])
    single_rate = len(images) / (time.perf_counter() - start)
    assert torch.allclose(batched, single, atol=1e-4)
    print(f"  batched (128)      {batched_rate:8.0f} images/s")
    print(f"  one at a time      {single_rate:8.0f} images/s   batched / one at a time = "
          f"{batched_rate / single_rate:.1f}x")

    runs = (("unlearnable-clusters, --surrogate", "unlearnable-clusters", zoo["surrogate"]),
            ("unlearnable-clusters, default surrogate", "unlearnable-clusters", None),
            ("error-minimizing (the default)", "error-minimizing", None))
    rates, protected = {}, []
    print(f"redteam protect of the digits demo folder ({len(files)} images, 10 clusters)")
    with tempfile.TemporaryDirectory() as tmp:
        for index, (label, method, surrogate) in enumerate(runs):
            protected.append(Path(tmp) / f"protected-{index}")
            start = time.perf_counter()
            protect_folder(zoo["publish"], protected[-1], method=method, surrogate=surrogate,
                           quiet=True)
            seconds = time.perf_counter() - start
            rates[label] = len(files) / seconds
            print(f"  {label:42s} {seconds:6.1f} s {rates[label]:6.0f} images/s")
        default = rates["error-minimizing (the default)"]
        print("  images/s / the default's: " + "; ".join(
            f"{label} {rate / default:.2f}x" for label, rate in rates.items())
            + "  [target: the default < 60 s]")
        evaluations_with_and_without_a_shared_cache(zoo, protected[::2], Path(tmp))


def evaluations_with_and_without_a_shared_cache(zoo, protected: list[Path], tmp: Path) -> None:
    """Two evaluate-protection runs of one clean folder: a cache each vs one shared cache."""
    seconds, clean = {}, {}
    for label, shared in (("a cache per run", None), ("one shared cache", ModelCache())):
        start = time.perf_counter()
        for index, folder in enumerate(protected):
            result = evaluate_protection(ProtectionEvaluationRequest(
                clean_dir=zoo["publish"], protected_dir=folder, test_dir=zoo["test"],
                out=tmp / f"{label}-{index}".replace(" ", "-"), epochs=EVALUATION_EPOCHS,
                quiet=True), cache=shared)
            clean[(label, index)] = [f.details["split_scores"] for f in result.findings
                                     if "split_scores" in f.details]
        seconds[label] = time.perf_counter() - start
    assert all(clean[("a cache per run", i)] == clean[("one shared cache", i)]
               for i in range(len(protected)))
    print(f"redteam evaluate-protection of {len(protected)} protected copies of one clean folder "
          f"({EVALUATION_EPOCHS} epochs)")
    for label, value in seconds.items():
        print(f"  {label:42s} {value:6.1f} s")
    print(f"  a cache per run / one shared cache = "
          f"{seconds['a cache per run'] / seconds['one shared cache']:.2f}x (the same accuracies)")


if __name__ == "__main__":
    main()
