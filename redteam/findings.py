"""Findings and the run record: the data every report, exit code and diff is built from.

The JSON form is the one in DESIGN.md ("A finding"); ``findings.json`` is
``{"schema": 1, "run": RunRecord, "findings": [Finding, ...]}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1

SEVERITIES = ("info", "low", "medium", "high", "critical")
STATUSES = ("fail", "pass", "error", "skipped")


def severity_rank(severity: str) -> int:
    """Position of ``severity`` in ``SEVERITIES`` (info = 0 ... critical = 4)."""
    return SEVERITIES.index(severity)


@dataclass
class Metric:
    """The one number a finding is judged on, with its threshold and baselines."""

    name: str
    value: float
    threshold: float | None = None
    higher_is_worse: bool = True
    ci95: list[float] | None = None
    baselines: dict[str, float] = field(default_factory=dict)


@dataclass
class Evidence:
    """One example behind a finding: what went in, what came out, what was expected."""

    input: str
    output: str
    expected: str = ""
    score: float | None = None


@dataclass
class Finding:
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
    ranks = [severity_rank(f.severity) for f in findings if f.status in ("fail", "error")]
    return SEVERITIES[max(ranks)] if ranks else None
