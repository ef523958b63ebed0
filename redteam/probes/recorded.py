"""The retrained model's measurements, read back from an earlier run (``--retrain-results``).

A team whose gold model (retrained without the forget set) is large audits it once; later audits
of unlearned candidates take its measurements from that run's ``findings.json`` instead of
loading and running it again. Every probe that compares with the retrained model measures each
model through ``ProbeContext.measure``, which keeps the values in the probe's finding
(``details["measurements"]``, by model label). The earlier run is either an audit *of* the gold
model (its ``target`` measurements are used) or an audit that was given it as ``--retrain``
(its ``retrain`` measurements are used).

They count only if they were measured the way this run measures: same audit data, same prompt
format, same seed and scoring and data settings, same settings of each probe; anything else is
one line and exit 2 before any probe runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redteam.core.errors import InputError
from redteam.core.fileio import sha256_file

MEASUREMENTS = "measurements"  # the details key ProbeContext.measure's values are kept under


@dataclass
class RecordedRetrain:
    """What an earlier run measured on the retrained model, by probe."""

    run_dir: Path
    label: str  # whose measurements in that run: "target" or "retrain"
    files: dict[str, str]  # the retrained model's files and their SHA-256
    findings_sha256: str
    run: dict[str, Any]  # that run's record (findings.json "run")
    statuses: dict[str, str]  # probe -> its status there
    by_probe: dict[str, Any]  # probe -> the retrained model's measurement

    @property
    def where(self) -> str:
        return str(self.run_dir / "findings.json")


def read_retrain_results(run_dir: Path) -> RecordedRetrain:
    """The retrained model's measurements in the run folder ``run_dir``."""
    from reports.html import load_document

    document = load_document(run_dir)
    run = document["run"]
    label = "retrain" if "retrain" in run.get("inputs", {}) else "target"
    files = run["inputs"]["retrain"] if label == "retrain" else run["target"].get("files", {})
    by_probe, statuses = {}, {}
    for finding in document["findings"]:
        statuses.setdefault(finding["probe"], finding["status"])
        measured = (finding.get("details") or {}).get(MEASUREMENTS)
        if isinstance(measured, dict) and label in measured:
            by_probe[finding["probe"]] = measured[label]
    return RecordedRetrain(Path(run_dir), label, files, sha256_file(run_dir / "findings.json"),
                           run, statuses, by_probe)


def check_retrain_results(recorded: RecordedRetrain, *, data_sha256: dict | None,
                          prompt_format: dict, seed: int, settings: dict[str, Any],
                          recorded_settings: dict[str, Any], probes: list) -> None:
    """Refuse (``InputError``) measurements taken another way than this run takes them.

    ``settings`` and ``recorded_settings`` are this run's and the earlier run's resolved
    settings, by section (scoring, data) and by probe name; ``probes`` are this run's."""
    where, run = recorded.where, recorded.run
    if (run.get("inputs") or {}).get("data") != data_sha256:
        raise InputError(f"{where}: --retrain-results: measured on other audit data than --data "
                         "(the data's SHA-256 differs)")
    if run.get("seed") != seed:
        raise InputError(f"{where}: --retrain-results: measured with seed {run.get('seed')}, "
                         f"this run uses --seed {seed}")
    for name, value in settings.items():
        if recorded_settings.get(name) != value:
            raise InputError(f"{where}: --retrain-results: settings of {name} differ "
                             f"({recorded_settings.get(name)} there, {value} here)")
    before = {k: (run.get("prompt_format") or {}).get(k) for k in ("name", "system_prompt",
                                                                  "example")}
    now = {k: prompt_format.get(k) for k in before}
    if before != now:
        raise InputError(f"{where}: --retrain-results: measured in prompt format "
                         f"{before['name'] or 'none'!r}, this run asks in {now['name']!r} "
                         "(give the same --prompt-format, and the same template and system "
                         "prompt)")
    absent = [p.name for p in probes if p.uses_retrain and p.name not in recorded.statuses]
    if absent:
        raise InputError(f"{where}: --retrain-results: that run did not run "
                         f"{', '.join(absent)}, so it holds no measurement of the retrained "
                         "model for them (audit the gold model with them, or narrow --probe)")


def recorded_measurement(recorded: RecordedRetrain, probe: str) -> Any:
    """The retrained model's measurement for ``probe``; an error naming why when that run has
    none (the probe crashed or was skipped there), which the engine reports as the probe's."""
    if probe not in recorded.by_probe:
        status = recorded.statuses.get(probe, "not run")
        raise RuntimeError(f"{recorded.where} holds no measurement of the retrained model for "
                           f"{probe} (its finding there is {status}); give --retrain instead")
    return recorded.by_probe[probe]
