"""``redteam report diff RUN_A RUN_B``: what changed between two runs of the same audit.

Findings are matched by probe (in order, when a probe reported several). Each pair is a new
failure (failing or erroring in B, not in A), fixed (failing in A, passing in B), unchanged, or
changed otherwise (skipped, inconclusive); metrics get their delta, both runs' 95% intervals and
whether those overlap. A probe whose ``version`` differs between the two run records is named:
its change may be the probe's, not the model's. Runs are comparable only when schema, suite,
data and probe settings are the same (a different model is the point of a diff).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redteam.core.errors import InputError
from redteam.core.findings import FAILING, fails_gate


def incomparable(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """Why the two documents cannot be compared, or None."""
    run_a, run_b = a["run"], b["run"]
    if a.get("schema") != b.get("schema"):
        return f"schema {a.get('schema')} vs {b.get('schema')}"
    if run_a.get("suite") != run_b.get("suite"):
        return f"suite {run_a.get('suite')} vs {run_b.get('suite')}"
    data_a, data_b = (run_a.get("inputs") or {}).get("data"), (run_b.get("inputs") or {}).get(
        "data")
    if data_a != data_b:
        return "the audit data differ (their SHA-256 in the run records)"
    probes_a = (run_a.get("config") or {}).get("probes") or {}
    probes_b = (run_b.get("config") or {}).get("probes") or {}
    if probes_a != probes_b:
        changed = sorted(name for name in set(probes_a) | set(probes_b)
                         if probes_a.get(name) != probes_b.get(name))
        return f"the probe settings differ ({changed[0]})"
    return None


def _pairs(a: list[Mapping], b: list[Mapping]) -> list[tuple[str, Mapping | None, Mapping | None]]:
    def keyed(findings: list[Mapping]) -> dict[str, Mapping]:
        seen: dict[str, int] = {}
        out = {}
        for finding in findings:
            seen[finding["probe"]] = seen.get(finding["probe"], 0) + 1
            suffix = "" if seen[finding["probe"]] == 1 else f" #{seen[finding['probe']]}"
            out[finding["probe"] + suffix] = finding
        return out

    left, right = keyed(a), keyed(b)
    return [(key, left.get(key), right.get(key)) for key in dict.fromkeys([*left, *right])]


def _change(before: Mapping | None, after: Mapping | None) -> str:
    was = before is not None and before["status"] in FAILING
    now = after is not None and after["status"] in FAILING
    if now and not was:
        return "new failure"
    if was and after is not None and after["status"] == "pass":
        return "fixed"
    if before is not None and after is not None and (before["status"], before["severity"]) == (
            after["status"], after["severity"]):
        return "unchanged"
    return "changed"


def _overlap(a: list | None, b: list | None) -> bool | None:
    if not a or not b:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def diff_documents(a: Mapping[str, Any], b: Mapping[str, Any], where: str = "") -> dict:
    """The diff of two comparable findings documents (plain data: the JSON form)."""
    reason = incomparable(a, b)
    if reason:
        raise InputError(f"{where}: the runs cannot be compared: {reason}")
    versions_a = a["run"].get("probe_versions") or {}
    versions_b = b["run"].get("probe_versions") or {}
    rows = []
    for probe, before, after in _pairs(a["findings"], b["findings"]):
        name = (after or before)["probe"]
        ma = (before or {}).get("metric") or {}
        mb = (after or {}).get("metric") or {}
        va, vb = ma.get("value"), mb.get("value")
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (va, vb))
        rows.append({
            "probe": probe, "change": _change(before, after),
            "a": {"status": before["status"], "severity": before["severity"]} if before else None,
            "b": {"status": after["status"], "severity": after["severity"]} if after else None,
            "metric": mb.get("name") or ma.get("name"),
            "value_a": va, "value_b": vb,
            "delta": round(vb - va, 6) if numeric else None,
            "ci95_a": ma.get("ci95"), "ci95_b": mb.get("ci95"),
            "intervals_overlap": _overlap(ma.get("ci95"), mb.get("ci95")),
            "probe_version_a": versions_a.get(name), "probe_version_b": versions_b.get(name),
            "probe_changed": name in versions_a and name in versions_b
            and versions_a[name] != versions_b[name],
        })
    counts = {change: sum(r["change"] == change for r in rows)
              for change in ("new failure", "fixed", "changed", "unchanged")}
    return {"a": _side(a), "b": _side(b), "counts": counts, "rows": rows,
            "probes_changed": sorted({r["probe"] for r in rows if r["probe_changed"]})}


def _side(document: Mapping[str, Any]) -> dict:
    run = document["run"]
    target = run.get("target") or {}
    return {"model": target.get("path", ""), "suite": run.get("suite", ""),
            "started": run.get("started", ""), "exit_code": run.get("exit_code")}


def new_failures_at(diff: Mapping[str, Any], fail_on: str) -> list[Mapping]:
    """The new failures at or above ``fail_on`` (what makes ``report diff`` exit 1)."""
    return [row for row in diff["rows"] if row["change"] == "new failure"
            and fails_gate(row["b"], fail_on)]


def render_diff(diff: Mapping[str, Any]) -> str:
    """The diff as one self-contained HTML page (the report's style and safety rules)."""
    from reports.html import CSP, _css, _env

    order = {"new failure": 0, "fixed": 1, "changed": 2, "unchanged": 3}
    rows = sorted(diff["rows"], key=lambda r: order[r["change"]])
    return _env().get_template("diff.html.j2").render(csp=CSP, css=_css(), diff=diff, rows=rows)


def diff_files(out: Path) -> tuple[Path, Path]:
    """The two files ``write_diff`` writes for ``--out out``: the HTML page and its JSON form
    beside it (same name, ``.json``), so that both are checked as new before either is written.
    An ``out`` ending in ``.json`` would be both at once, and is refused."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        raise InputError(f"{out}: --out names the HTML page; its JSON form is written beside it "
                         f"(choose e.g. {out.with_suffix('.html').name})")
    return out, out.with_suffix(".json")


def write_diff(diff: Mapping[str, Any], out: Path) -> Path:
    """``out`` (HTML) and the JSON form beside it (``diff_files``), atomically."""
    import json

    from redteam.core.fileio import atomic_write_text

    page, data = diff_files(out)
    atomic_write_text(data, json.dumps(diff, indent=2, ensure_ascii=False))
    return atomic_write_text(page, render_diff(diff))
