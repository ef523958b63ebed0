"""Several processes through accelerate: `accelerate launch -m redteam audit`
splits the scorer's batches between the processes, the main process alone writes the run
folder, and the findings equal a one-process run's.

On a machine without GPUs, accelerate starts the processes with `--multi_gpu` (torchrun; they
talk over gloo on the CPU); its `--cpu` flag starts several CPU processes only through mpirun.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from redteam.cli import main

PROBES = ("unlearning.knowledge_qa", "unlearning.adversarial_prompts", "unlearning.verbatim",
          "unlearning.exact_memorization", "unlearning.membership_inference",
          "unlearning.relearning_attack")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Probes that fine-tune a copy of the model: under two processes the fine-tuning runs data
# parallel (the same steps on shards, gradients averaged), equal in exact arithmetic but not in
# floats, so a generated answer may differ in a token. Their verdict and metric must agree.
TRAINING_PROBES = ("unlearning.relearning_attack",)


def comparable(run: Path) -> list[dict]:
    findings = json.loads((run / "findings.json").read_text())["findings"]
    for finding in findings:
        finding.pop("duration_s")
    return [{key: finding[key] for key in ("probe", "status", "severity")} | {
                "metric": {k: round(finding["metric"][k], 2) for k in ("value", "threshold")}}
            if finding["probe"] in TRAINING_PROBES else finding for finding in findings]


def test_two_processes_find_what_one_finds(unlearning_zoo, tmp_path, capsys):
    zoo = unlearning_zoo
    args = ["audit", str(zoo["ga"]), "--suite", "unlearning", "--data", str(zoo["audit"]),
            "--reference", str(zoo["original"]), "--retrain", str(zoo["retrain"]), "--quiet",
            "--batch-size", "4", *(a for p in PROBES for a in ("--probe", p))]
    main([*args, "--out", str(tmp_path / "one")])
    capsys.readouterr()
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
         "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(free_port()), "-m", "redteam", *args,
         "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert launched.returncode in (0, 1), launched.stderr[-3000:]
    assert launched.stdout.count("report:") == 1  # one summary line, from the main process
    one, two = comparable(tmp_path / "one"), comparable(tmp_path / "two")
    assert [f["status"] for f in one] == [f["status"] for f in two]
    assert one == two
    record = json.loads((tmp_path / "two" / "findings.json").read_text())["run"]
    assert record["processes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # nothing else written
