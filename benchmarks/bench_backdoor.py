"""Clean unlearning with early stopping vs the reference's fixed 20 epochs (printed, never
asserted), and the wall time of the whole backdoor suite on a demo classifier.

Target: the early-stopped run reaches the same verdict in a fraction of the epochs;
the backdoor suite runs in under a minute on 2 CPU cores.

Run: ``make bench`` (builds the digits zoo on first use).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from defenses.ebyd import clean_unlearning, collapse_consistency
from redteam.core.vision import label_ids, load_image_folder
from redteam.engine import AuditRequest, run_audit
from redteam.probes.backdoor import EXPOSURE_DEFAULTS
from redteam.targets import load_target
from redteam.zoo.digits import build_backdoor_zoo


def main() -> None:
    zoo = build_backdoor_zoo(size="demo")
    settings = {k: v for k, v in EXPOSURE_DEFAULTS.items() if k != "stop_accuracy"}
    print(f"clean unlearning on the demo classifiers (the exposure probe's settings "
          f"{settings}), torch threads {torch.get_num_threads()}; verdict = VAR > 0.01 and "
          f"4 repeats on random subsets agree on the label")
    for name in ("badnets", "blend", "clean"):
        target = load_target(zoo[name])
        data = load_image_folder(zoo["clean-data"], target.model.size,
                                 label_ids(target.model.hf_model.config))
        for label, stop in (("early stop (acc < 0.20)", 0.20), ("fixed 20 epochs", -1.0)):
            start = time.perf_counter()
            result = clean_unlearning(target.model, data.images, data.labels,
                                      stop_accuracy=stop, **settings)
            repeats = collapse_consistency(target.model, data.images, data.labels,
                                           stop_accuracy=stop, **settings)
            seconds = time.perf_counter() - start
            shares = np.asarray(result.final_shares)
            flagged = shares.var() > 0.01 and repeats.agreement == 1.0 and (
                repeats.mode == int(shares.argmax()))
            print(f"  {name:8} {label:24} {result.epochs_run:3d} epochs {seconds:6.1f} s (5 runs)"
                  f"   flagged={flagged!s:5} label={int(shares.argmax())} "
                  f"share={shares.max():.2f} repeats={repeats.labels}")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_audit(AuditRequest(model=zoo["badnets"], suite="backdoor", data=zoo["clean-data"],
                               out=Path(tmp) / "run", device="cpu", quiet=True))
        print(f"backdoor suite (exposure + trigger recovery) on digits-badnets: "
              f"{time.perf_counter() - start:.1f} s  [target < 60 s]")


if __name__ == "__main__":
    main()
