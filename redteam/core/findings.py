"""Findings and the run record: the data every report, exit code and diff is built from.

The JSON form is the one in docs/architecture.md ("A finding"); ``findings.json`` is
``{"schema": 1, "run": RunRecord, "findings": [Finding, ...]}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 1


class Status(StrEnum):
    """What a probe concluded. A ``StrEnum``: it compares equal to, and is written to JSON as,
    its plain name, which is the form of ``findings.json``."""

    FAIL = "fail"
    PASS = "pass"
    INCONCLUSIVE = "inconclusive"  # the probe could not decide, and says why
    ERROR = "error"  # the probe crashed or its figure was not a number: nothing was checked
    SKIPPED = "skipped"  # the data or a comparison model it needs was not given


class Severity(StrEnum):
    """How bad a failure is, from the severity policy (``core.severity``), lowest first."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


SEVERITIES = tuple(s.value for s in Severity)
STATUSES = tuple(s.value for s in Status)
# The statuses that count against ``--fail-on``: a failure, and a crash (the property was not
# checked, which a reviewer may not read as a pass).
FAILING = frozenset({Status.FAIL, Status.ERROR})


def severity_rank(severity: str) -> int:
    """Position of ``severity`` in ``SEVERITIES`` (info = 0 ... critical = 4)."""
    return SEVERITIES.index(severity)


def fails_gate(finding: Finding | Mapping[str, Any], fail_on: str) -> bool:
    """Whether ``finding`` (a ``Finding`` or its JSON form) fails the ``--fail-on`` gate: a
    failing status at or above that severity. The exit code, the report's summary and the
    machine formats all ask this one question."""
    status, severity = ((finding.status, finding.severity) if isinstance(finding, Finding)
                        else (finding.get("status"), finding.get("severity")))
    return status in FAILING and severity_rank(severity) >= severity_rank(fail_on)


@dataclass
class Metric:
    """The one number a finding is judged on, with its threshold and baselines."""

    name: str
    value: float
    threshold: float | None = None
    higher_is_worse: bool = True
    ci95: list[float] | None = None
    baselines: dict[str, float] = field(default_factory=dict)
    worst: float | None = None  # its worst value, for the severity (redteam.core.severity)
    n: int | None = None  # items (outcomes, texts) behind the value and its interval


@dataclass
class Evidence:
    """One example behind a finding: what went in, what came out, what was expected."""

    input: str
    output: str
    expected: str = ""
    score: float | None = None


# The keys of ``Finding.details`` the report draws instead of listing, with the shape each must
# have; every other key is shown as a plain "name: value" line.
RENDERED_DETAILS = {
    "split_scores": "{group: {series: number}}, drawn as grouped bars",
    "chart_title": "the title of the split_scores bars",
    "chart_y_label": "their value axis",
    "roc": "{label: {\"fpr\": [numbers], \"tpr\": [numbers], \"auc\": number}}, ROC curves",
    "curves": "{title, x_label, y_label, series: {name: [xs, ys]}}, a line chart",
    "histograms": "{title, x_label, bins, series: {name: [numbers]}}, overlaid histograms",
    "tables": "{title: [rows]}, each row a flat object, drawn as tables",
    "per_item": "[rows], one per audited item (probes.judging.item_rows), a table",
    "traceback": "the crash's traceback, on error findings",
}


@dataclass
class Finding:
    """One result of a probe (docs/architecture.md, "A finding"). ``details`` holds the
    probe's structured results; the keys in ``RENDERED_DETAILS`` are drawn by the report."""

    probe: str
    suite: str
    title: str
    status: str
    severity: str = "info"
    metric: Metric | None = None
    summary: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    remediation: str = ""
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown finding status {self.status!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        self.status, self.severity = Status(self.status), Severity(self.severity)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        data = dict(data)
        if data.get("metric") is not None:
            data["metric"] = Metric(**data["metric"])
        data["evidence"] = [Evidence(**e) for e in data.get("evidence", [])]
        return cls(**data)


@dataclass
class RunRecord:
    """Everything needed to reproduce and trust a run: versions, inputs and their hashes."""

    tool_version: str
    command: list[str]
    suite: str
    target: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    config_sha256: str = ""
    seed: int = 0
    fail_on: str = "high"
    device: str = "cpu"
    libraries: dict[str, str] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    probes_skipped: dict[str, str] = field(default_factory=dict)
    data_items: dict[str, int] = field(default_factory=dict)  # items audited, per split
    prompt_format: dict[str, Any] = field(default_factory=dict)  # LLM runs: how they asked
    scoring: dict[str, Any] = field(default_factory=dict)  # LLM runs: how answers were scored
    processes: int = 1  # processes the work was split over (accelerate launch)
    # each probe's ``version``: a changed probe, not a changed model, may explain a diff
    probe_versions: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def findings_document(run: RunRecord, findings: list[Finding]) -> dict[str, Any]:
    """The JSON object written to ``findings.json``."""
    return {
        "schema": SCHEMA_VERSION,
        "run": run.to_dict(),
        "findings": [f.to_dict() for f in findings],
    }


def worst_severity(findings: list[Finding]) -> str | None:
    """The highest severity among failing or erroring findings, or None when all pass."""
    ranks = [severity_rank(f.severity) for f in findings if f.status in FAILING]
    return SEVERITIES[max(ranks)] if ranks else None


def is_run_relative(path: str) -> bool:
    """Whether an artifact path stays inside the run folder: relative, with no ``..`` step (``/``
    or ``\\`` separated), no drive letter or URL scheme. The report links and shows artifacts,
    so one pointing elsewhere (``../../secret.png``, ``/etc/passwd``, ``C:\\x``) would make a
    reader's browser load a file the run never wrote."""
    parts = re.split(r"[/\\]", path)
    return bool(path.strip()) and parts[0] != "" and ".." not in parts and not re.match(
        r"^[A-Za-z][A-Za-z0-9+.-]*:", path)


def _is_number(value: Any, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(ok: bool, where: str, field_path: str, expected: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {field_path}: expected {expected}")


def _check_strings(value: Any, where: str, field_path: str) -> None:
    _check(isinstance(value, list) and all(isinstance(v, str) for v in value), where,
           field_path, "a list of strings")


def _check_metric(metric: Any, where: str, at: str) -> None:
    _check(isinstance(metric, dict), where, at, "an object or null")
    _check(isinstance(metric.get("name"), str), where, f"{at}.name", "a string")
    for name in ("value", "threshold"):
        _check(_is_number(metric.get(name), optional=True), where, f"{at}.{name}",
               "a number or null")
    _check(isinstance(metric.get("higher_is_worse", True), bool), where,
           f"{at}.higher_is_worse", "true or false")
    ci95 = metric.get("ci95")
    _check(ci95 is None or (isinstance(ci95, list) and len(ci95) == 2
                            and all(_is_number(v) for v in ci95)),
           where, f"{at}.ci95", "a list of two numbers or null")
    count = metric.get("n")
    _check(count is None or (isinstance(count, int) and not isinstance(count, bool)
                             and count >= 0), where, f"{at}.n", "a count (integer) or null")
    baselines = metric.get("baselines", {})
    _check(isinstance(baselines, dict) and all(_is_number(v, optional=True)
                                               for v in baselines.values()),
           where, f"{at}.baselines", "an object of numbers")


def _check_finding(finding: Any, where: str, at: str) -> None:
    _check(isinstance(finding, dict), where, at, "an object")
    for name in ("probe", "suite", "title", "summary", "remediation"):
        _check(isinstance(finding.get(name, ""), str), where, f"{at}.{name}", "a string")
    _check(finding.get("status") in STATUSES, where, f"{at}.status", f"one of {STATUSES}")
    _check(finding.get("severity") in SEVERITIES, where, f"{at}.severity",
           f"one of {SEVERITIES}")
    if finding.get("metric") is not None:
        _check_metric(finding["metric"], where, f"{at}.metric")
    evidence = finding.get("evidence", [])
    _check(isinstance(evidence, list), where, f"{at}.evidence", "a list")
    for i, row in enumerate(evidence):
        _check(isinstance(row, dict) and all(isinstance(row.get(k, ""), str)
                                             for k in ("input", "output", "expected"))
               and _is_number(row.get("score"), optional=True),
               where, f"{at}.evidence[{i}]", "an object of input, output, expected, score")
    _check(isinstance(finding.get("details", {}), dict), where, f"{at}.details", "an object")
    for name in ("artifacts", "references"):
        _check_strings(finding.get(name, []), where, f"{at}.{name}")
    for i, path in enumerate(finding.get("artifacts", [])):
        _check(is_run_relative(path), where, f"{at}.artifacts[{i}]",
               f"a relative path inside the run folder, not {path[:200]!r}")
    _check(_is_number(finding.get("duration_s", 0.0)), where, f"{at}.duration_s", "a number")


def check_document(document: Any, where: str) -> dict[str, Any]:
    """Check the shape of a ``findings.json`` document read back from disk; return it.

    A run folder can be edited by anyone before ``redteam report`` renders it, so every field
    the report reads is checked for its type first; a ``ValueError`` names the first bad one.
    """
    _check(isinstance(document, dict), where, "(top level)", "an object")
    _check(document.get("schema") == SCHEMA_VERSION, where, "schema", str(SCHEMA_VERSION))
    run, findings = document.get("run"), document.get("findings")
    _check(isinstance(run, dict), where, "run", "an object")
    _check(isinstance(findings, list), where, "findings", "a list")
    for name in ("tool_version", "suite", "config_sha256", "fail_on", "device", "started",
                 "finished"):
        _check(isinstance(run.get(name, ""), str), where, f"run.{name}", "a string")
    _check_strings(run.get("command", []), where, "run.command")
    target = run.get("target", {})
    _check(isinstance(target, dict), where, "run.target", "an object")
    for label, files in (("run.target.files", target.get("files", {})),
                         *((f"run.inputs.{k}", v) for k, v in
                           (run.get("inputs") or {}).items())):
        _check(isinstance(files, dict) and all(isinstance(v, str) for v in files.values()),
               where, label, "an object of SHA-256 digests")
    for name in ("config", "libraries", "probes_skipped", "inputs", "probe_versions"):
        _check(isinstance(run.get(name, {}), dict), where, f"run.{name}", "an object")
    _check(all(isinstance(v, int) and not isinstance(v, bool)
               for v in (run.get("probe_versions") or {}).values()),
           where, "run.probe_versions", "an object of integers")
    _check(run.get("exit_code") is None or (isinstance(run.get("exit_code"), int)
                                            and not isinstance(run["exit_code"], bool)),
           where, "run.exit_code", "an integer or null")
    for i, finding in enumerate(findings):
        _check_finding(finding, where, f"findings[{i}]")
    return document
