"""Protecting an image folder: images/s of each method, printed side by side.

Printed, never asserted: surrogate feature extraction batched vs one image at a time (the same
encoder, the same images), and the whole ``redteam protect`` of the digits demo folder with each
method: Unlearnable Clusters with the demo's surrogate, Unlearnable Clusters with its label-free
default surrogate, and the default (error-minimising noise, no surrogate). Target: the default
protects the 900 demo digits in under a minute on 2 CPU cores.

Run: ``make bench`` (builds the protection zoo on first use).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from defenses.unlearnable_clusters import embed
from redteam.commands.protect import load_surrogate, protect_folder
from redteam.core.vision import images_tensor, list_image_files, read_resized
from redteam.zoo.protection import build_protection_zoo


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
    rates = {}
    print(f"redteam protect of the digits demo folder ({len(files)} images, 10 clusters)")
    for label, method, surrogate in runs:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            protect_folder(zoo["publish"], Path(tmp) / "protected", method=method,
                           surrogate=surrogate, quiet=True)
            seconds = time.perf_counter() - start
        rates[label] = len(files) / seconds
        print(f"  {label:42s} {seconds:6.1f} s {rates[label]:6.0f} images/s")
    default = rates["error-minimizing (the default)"]
    print("  images/s / the default's: " + "; ".join(
        f"{label} {rate / default:.2f}x" for label, rate in rates.items())
        + "  [target: the default < 60 s]")


if __name__ == "__main__":
    main()
