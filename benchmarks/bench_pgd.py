"""PGD on the demo digits classifier: images/s batched vs one image at a time (printed side by
side, never asserted), and the wall time of the whole adversarial suite on that classifier.

Target: attacks run batched on the whole evaluation set; the adversarial suite on the
demo classifier runs in under a minute on 2 CPU cores.

Run: ``make bench`` (builds the digits zoo on first use).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from redteam.core.vision import label_ids, load_image_folder
from redteam.engine import AuditRequest, run_audit
from redteam.probes.adversarial import PGDLinf
from redteam.targets import load_target
from redteam.zoo.digits import build_backdoor_zoo


def main() -> None:
    zoo = build_backdoor_zoo(size="demo")
    target = load_target(zoo["clean"])
    data = load_image_folder(zoo["test-data"], target.model.size,
                             label_ids(target.model.hf_model.config))
    images, labels = data.images[:256], data.labels[:256]
    probe = PGDLinf()
    print(f"PGD-L∞ (ε = 8/255, {probe.config['steps']} steps) on {len(images)} digits, "
          f"torch threads {torch.get_num_threads()}")
    start = time.perf_counter()
    batched = probe.attack_batches(target.model, images, labels, 8 / 255, seed=0)
    batched_rate = len(images) / (time.perf_counter() - start)
    count = 64
    start = time.perf_counter()
    for i in range(count):
        probe.attack_batches(target.model, images[i:i + 1], labels[i:i + 1], 8 / 255, seed=0)
    single_rate = count / (time.perf_counter() - start)
    assert batched.shape == images.shape
    print(f"  batched ({probe.config['batch_size']})    {batched_rate:8.1f} images/s")
    print(f"  one at a time    {single_rate:8.1f} images/s   batched / one at a time = "
          f"{batched_rate / single_rate:.1f}x")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_audit(AuditRequest(model=zoo["clean"], suite="adversarial", data=zoo["test-data"],
                               out=Path(tmp) / "run", device="cpu", quiet=True))
        print(f"adversarial suite on digits-clean: {time.perf_counter() - start:.1f} s  "
              "[target < 60 s]")


if __name__ == "__main__":
    main()
