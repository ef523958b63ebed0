"""``figures.md``: every run of a folder of runs (the demo's) as one Markdown page of verdicts
and figures, so the measured numbers live in a file the run writes instead of in prose that
someone re-types (docs/demo.md quotes the last timed demo's)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redteam.core.fileio import atomic_write_text


def _cell(value: Any) -> str:
    from reports.html import fmt_number

    text = fmt_number(value) if isinstance(value, int | float) or value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def figures_markdown(documents: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """A section per run (its model, exit code), a row per finding: probe, status, severity,
    the metric with its value, threshold, 95 % interval and count."""
    lines = [f"# {title}", "", f"{len(documents)} runs. Written by the run itself; the "
             "reports beside it hold the evidence.", ""]
    for name, document in documents.items():
        run = document["run"]
        lines += [f"## {name}", "", f"`{_cell((run.get('target') or {}).get('path', ''))}` · "
                  f"suite {run.get('suite', '')} · exit code {run.get('exit_code')}", "",
                  "| probe | status | severity | metric | value | threshold | 95 % interval "
                  "| n |", "|---|---|---|---|---|---|---|---|"]
        for finding in document["findings"]:
            metric = finding.get("metric") or {}
            ci = metric.get("ci95")
            lines.append(
                f"| `{finding['probe']}` | {finding['status']} | {finding['severity']} | "
                f"{_cell(metric.get('name', '—'))} | {_cell(metric.get('value'))} | "
                f"{_cell(metric.get('threshold'))} | "
                f"{f'{_cell(ci[0])}–{_cell(ci[1])}' if ci else '—'} | "
                f"{_cell(metric.get('n'))} |")
        lines.append("")
    return "\n".join(lines)


def write_figures(folder: Path, title: str) -> Path:
    """``folder/figures.md`` from every ``folder/*/findings.json`` (and one level deeper), in
    name order."""
    from reports.html import load_document

    runs = sorted({p.parent for pattern in ("*/findings.json", "*/*/findings.json")
                   for p in Path(folder).glob(pattern)})
    documents = {str(run.relative_to(folder)): load_document(run) for run in runs}
    path = Path(folder) / "figures.md"
    atomic_write_text(path, figures_markdown(documents, title))
    return path
