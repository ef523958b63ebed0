"""Verdicts through vLLM beside the in-process verdicts (printed; exit 1 when a status differs).

Each of the unlearning zoo's original, retrain and NPO models is served by vLLM's CPU build
(``make vllm``) and audited through its endpoint with the whole unlearning suite, the same
data, reference and retrained model as the in-process audit of its folder; every probe both
paths run is printed with its status and figure on each path, and the largest figure gap.

Run: ``make served-check`` (``SIZE=demo`` for the demo zoo; the test zoo by default).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redteam.engine import AuditRequest, run_audit  # noqa: E402
from redteam.targets import EndpointSpec  # noqa: E402
from redteam.zoo import build_unlearning_zoo  # noqa: E402
from tests.vllm_server import VLLMServer, vllm_missing  # noqa: E402

MODELS = ("original", "retrain", "npo")


def verdicts(findings) -> dict[str, tuple[str, float | None]]:
    return {f.probe: (f.status, f.metric.value if f.metric else None) for f in findings}


def main(size: str = "test") -> int:
    missing = vllm_missing()
    if missing:
        print(f"served-check: skipped, {missing}")
        return 0
    zoo = build_unlearning_zoo(size=size, quiet=True)
    common = dict(suite="unlearning", data=zoo["audit"], reference=zoo["original"],
                  retrain=zoo["retrain"], quiet=True)
    differ, largest = 0, 0.0
    print("| model | probe | in process | through vLLM |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in MODELS:
            local = verdicts(run_audit(AuditRequest(
                model=zoo[name], out=Path(folder) / f"{name}-local", **common)).findings)
            server = VLLMServer(zoo[name], name, Path(folder) / f"{name}.log")
            try:
                server.wait()
                served = run_audit(AuditRequest(
                    model=EndpointSpec(server.url, name), out=Path(folder) / f"{name}-served",
                    **common))
            finally:
                server.stop()
            remote = {p: v for p, v in verdicts(served.findings).items()
                      if not (v[0] == "skipped" and local[p][0] != "skipped")}
            for probe in sorted(p for p in local if p in remote):
                (a, x), (b, y) = local[probe], remote[probe]
                differ += a != b
                if x is not None and y is not None:
                    largest = max(largest, abs(x - y))
                print(f"| {name} | {probe.split('.')[-1]} | {a} {x} | {b} {y} |")
            skipped = sorted(set(local) - set(remote))
            print(f"| {name} | skipped through vLLM | | {', '.join(skipped)} |")
    print(f"\nstatuses that differ: {differ}; largest figure gap: {largest:.4f}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
