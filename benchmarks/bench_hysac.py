"""HySAC: training quadruplets/s and retrieval queries/s, printed side by side.

Printed, never asserted: retrieval of the demo's held-out unsafe captions against all its safe
and unsafe images (embed, traverse, rank), batched vs one query at a time; image embedding
batched vs one at a time; and training the demo HySAC as ``redteam demo`` does, with full
fine-tuning and with LoRA (r = 16). Target: the demo HySAC trains in under three
minutes on 2 CPU cores.

Run: ``make bench`` (builds the HySAC demo zoo on first use).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from hyperbolic.data import load_quadruplets
from redteam.commands.hysac import HySACTrainingRequest, load_encoder, train_hysac_folder
from redteam.engine import AuditRequest, run_audit
from redteam.zoo.visu import HYSAC_SETTINGS, SPLITS, build_visu_zoo


def rate(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


def main() -> None:
    zoo = build_visu_zoo(size="demo")
    encoder = load_encoder(zoo["hysac"])
    rows = load_quadruplets(zoo["test"])
    files = [r.safe_image for r in rows] + [r.unsafe_image for r in rows]
    images = encoder.read_images(files)
    queries = [r.unsafe_caption for r in rows]
    print(f"HySAC demo: {len(queries)} unsafe captions against {len(images)} images, torch "
          f"threads {torch.get_num_threads()}")

    started = time.perf_counter()
    batched = encoder.embed_images(images)
    batched_rate = rate(len(images), started)
    started = time.perf_counter()
    single = torch.cat([encoder.embed_images(images[i:i + 1]) for i in range(len(images))])
    single_rate = rate(len(images), started)
    assert torch.allclose(batched, single, atol=1e-4)
    print(f"  image embedding  batched {batched_rate:8.0f} images/s   one at a time "
          f"{single_rate:6.0f} images/s   = {batched_rate / single_rate:.1f}x")

    def search(captions: list[str]) -> torch.Tensor:
        return encoder.nearest(encoder.traverse(encoder.embed_texts(captions)), batched, 10)

    started = time.perf_counter()
    together = search(queries)
    batched_rate = rate(len(queries), started)
    started = time.perf_counter()
    alone = torch.cat([search([q]) for q in queries])
    single_rate = rate(len(queries), started)
    assert torch.equal(together[:, 0], alone[:, 0])
    print(f"  retrieval (embed, traverse, top-10)  batched {batched_rate:8.0f} queries/s   "
          f"one at a time {single_rate:6.0f} queries/s   = {batched_rate / single_rate:.1f}x")

    epochs = SPLITS["demo"]["hysac_epochs"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, lora_rank in (("full fine-tuning", 0), ("LoRA r=16", 16)):
            started = time.perf_counter()
            record = train_hysac_folder(HySACTrainingRequest(
                data=zoo["train"], base=zoo["clip"], out=Path(tmp) / label, epochs=epochs,
                lora_rank=lora_rank, device="cpu", **HYSAC_SETTINGS))
            seconds = time.perf_counter() - started
            print(f"  training, {label:16} {record['samples_per_s']:7.0f} quadruplets/s, "
                  f"{record['epochs_run']} of at most {epochs} epochs, "
                  f"{record['trainable_parameters']:,} trainable parameters, {seconds:.0f} s "
                  "[target < 180 s]")
            result = run_audit(AuditRequest(model=Path(tmp) / label, suite="safety",
                                            data=zoo["test"], out=Path(tmp) / f"{label} run",
                                            device="cpu", quiet=True))
            metrics = ", ".join(f"{f.probe.split('.')[1]} {f.metric.name} {f.metric.value}"
                                for f in result.findings)
            print(f"    held-out safety suite: {metrics}")


if __name__ == "__main__":
    main()
