"""The one check to run on a machine with a GPU (``make gpu-check``; not part of ``make test``).

Builds the test-size demo zoo, audits one target of each suite that has a CUDA path on
``--device cuda`` and on ``--device cpu``, and prints per suite the seconds of each run and
whether every probe reached the same verdict (status and severity). Then the served path: the
unlearning target served by a GPU build of vLLM (the Python named by REDTEAM_VLLM_PYTHON, or
.vllm-gpu-venv; skipped, saying so, where there is none) and audited through its endpoint,
each probe both paths run compared with the in-process CUDA verdict. Exit code 0 when all
verdicts agree, 1 when one differs, 2 when no CUDA device is present.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def _audits(size: str) -> dict[str, dict]:
    from redteam.zoo import build_unlearning_zoo
    from redteam.zoo.diffusion import build_concept_zoo
    from redteam.zoo.digits import build_backdoor_zoo
    from redteam.zoo.visu import build_visu_zoo

    lm = build_unlearning_zoo(size=size, quiet=True)
    digits = build_backdoor_zoo(size=size, quiet=True)
    visu = build_visu_zoo(size=size, quiet=True)
    concept = build_concept_zoo(size=size, quiet=True)
    return {
        "unlearning": {"model": lm["npo"], "data": lm["audit"], "reference": lm["original"],
                       "retrain": lm["retrain"]},
        "backdoor": {"model": digits["badnets"], "data": digits["clean-data"]},
        "adversarial": {"model": digits["clean"], "data": digits["test-data"]},
        "safety": {"model": visu["hysac"], "data": visu["test"], "reference": visu["clip"]},
        # The original draws the concept from plain prompts (bf16 loading and generation on
        # the GPU; the optimisation's random draws differ between devices, its verdict not).
        "concept": {"model": concept["original"], "data": concept["prompts"],
                    "reference": concept["original"], "judge": str(concept["judge"]),
                    "concept_label": "3",
                    "settings": {name: {"inference_steps": 20} for name in (
                        "concept.unlearndiffatk", "concept.random_prefix",
                        "concept.seed_search")}},
    }


def _verdicts(suite: str, paths: dict, device: str, out: Path) -> tuple[dict, float]:
    from redteam.engine import AuditRequest, run_audit

    started = time.perf_counter()
    result = run_audit(AuditRequest(suite=suite, device=device, out=out, quiet=True,
                                    command=["gpu-check", suite, device], **paths))
    return ({f.probe: (f.status, f.severity) for f in result.findings},
            time.perf_counter() - started)


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine; nothing to compare")
        return 2
    print(f"gpu-check on {torch.cuda.get_device_name(0)} (test-size zoo)")
    disagreements = 0
    with tempfile.TemporaryDirectory() as folder:
        for suite, paths in _audits("test").items():
            gpu, gpu_s = _verdicts(suite, paths, "cuda", Path(folder) / f"{suite}-cuda")
            cpu, cpu_s = _verdicts(suite, paths, "cpu", Path(folder) / f"{suite}-cpu")
            differ = sorted(p for p in cpu.keys() | gpu.keys() if cpu.get(p) != gpu.get(p))
            disagreements += len(differ)
            print(f"{suite:12} cuda {gpu_s:7.1f} s   cpu {cpu_s:7.1f} s   "
                  f"{len(cpu) - len(differ)}/{len(cpu)} verdicts agree")
            for probe in differ:
                print(f"  {probe}: cpu {cpu.get(probe)} vs cuda {gpu.get(probe)}")
            if suite == "unlearning":
                disagreements += _served_check(paths, gpu, Path(folder))
    return 1 if disagreements else 0


def _served_check(paths: dict, in_process: dict, folder: Path) -> int:
    """The unlearning target served by vLLM on the GPU, audited through its endpoint; the
    number of probes whose verdict differs from the in-process CUDA audit."""
    import os

    from redteam.engine import AuditRequest, run_audit
    from redteam.targets import EndpointSpec

    gpu_build = Path(os.environ.get("REDTEAM_VLLM_PYTHON", ".vllm-gpu-venv/bin/python"))
    if not gpu_build.exists():
        print("served      skipped: no GPU build of vLLM here (set REDTEAM_VLLM_PYTHON to "
              "its Python)")
        return 0
    os.environ["REDTEAM_VLLM_PYTHON"] = str(gpu_build)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.vllm_server import VLLMServer

    server = VLLMServer(paths["model"], "target", folder / "vllm.log",
                        extra=("--gpu-memory-utilization", "0.5"))
    try:
        server.wait()
        started = time.perf_counter()
        result = run_audit(AuditRequest(
            suite="unlearning", model=EndpointSpec(server.url, "target"), out=folder / "served",
            quiet=True, command=["gpu-check", "served"],
            **{k: v for k, v in paths.items() if k != "model"}))
        seconds = time.perf_counter() - started
    finally:
        server.stop()
    served = {f.probe: (f.status, f.severity) for f in result.findings if f.status != "skipped"}
    differ = sorted(p for p in served if p in in_process and served[p] != in_process[p])
    print(f"{'served':12} vLLM {seconds:7.1f} s (start-up {server.startup_s:.0f} s)   "
          f"{len(served) - len(differ)}/{len(served)} verdicts agree with cuda")
    for probe in differ:
        print(f"  {probe}: cuda {in_process[probe]} vs vLLM {served[probe]}")
    return len(differ)


if __name__ == "__main__":
    sys.exit(main())
