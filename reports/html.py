"""HTML of a run (the report attached to a security review) and of the demo's variant index.

Everything renders from the ``findings.json`` document alone, so ``redteam report RUN_DIR`` can
re-render a report without the model. The output is one self-contained file: inline CSS and SVG,
no script, no remote URL, a Content-Security-Policy that forbids remote loads, and Jinja
autoescaping of every string that came from a model or a data file.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from redteam.core.errors import InputError
from redteam.core.fileio import atomic_write_text
from redteam.core.findings import (
    FAILING,
    RENDERED_DETAILS,
    SEVERITIES,
    STATUSES,
    check_document,
    fails_gate,
    is_run_relative,
)
from redteam.core.severity import policy_text
from redteam.core.untrusted import read_json_file
from reports import charts

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"
EVIDENCE_ROWS = 10
PER_ITEM_ROWS = 15
TABLE_ROWS = 40
TEXT_LIMIT = 800
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg")
STATUS_ORDER = {"fail": 0, "error": 1, "inconclusive": 2, "pass": 3, "skipped": 4}
CHART_KEYS = tuple(RENDERED_DETAILS)


@lru_cache(maxsize=1)
def _env() -> Environment:
    """The Jinja environment, loaded from the ``templates`` package so it works from a wheel."""
    env = Environment(loader=PackageLoader("templates", ""), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_number
    return env


@lru_cache(maxsize=1)
def _css() -> Markup:
    env = _env()
    return Markup(env.loader.get_source(env, "report.css")[0])  # type: ignore[union-attr]


def fmt_number(value: Any) -> str:
    """Numbers as a reviewer reads them: 0.30, 0.00123, 512; a dash when absent."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or (value.is_integer() and abs(value) >= 1):
        return f"{int(value)}" if abs(value) < 1e15 else f"{value:.3g}"
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if value == 0:
        return "0"
    return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def _cls(prefix: str, value: str, allowed: Sequence[str]) -> str:
    return f"{prefix}-{value if value in allowed else 'unknown'}"


def _edge(status: str, severity: str | None) -> str:
    """CSS class of a box's coloured edge: the severity of a failure, else the status."""
    if status == "fail":
        return _cls("edge", str(severity), SEVERITIES)
    if status in ("error", "inconclusive"):
        return f"edge-{status}"
    return "edge-pass"


def _clip(text: Any, limit: int = TEXT_LIMIT) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more chars]"


def safe_href(path: Any) -> str | None:
    """A relative, percent-encoded link, or None for a path that leaves the run folder
    (absolute, ``..``, a scheme): ``findings.json`` refuses those, and the report, rendered
    also from a run still in memory, never links them either."""
    text = str(path or "")
    if not is_run_relative(text):
        return None
    return quote(text.replace("\\", "/"), safe="/#.-_~")


def threshold_text(metric: Mapping[str, Any] | None) -> str:
    """'≤ 0.30 passes' when higher values are worse, '≥ 0.30 passes' otherwise."""
    if not metric or metric.get("threshold") is None:
        return "—"
    sign = "≤" if metric.get("higher_is_worse", True) else "≥"
    return f"{sign} {fmt_number(metric['threshold'])} passes"


def _interval(ci: Any, n: Any) -> str:
    """'[0.7354, 1], n = 12': an interval is read with the count it rests on beside it (12/12
    and 1200/1200 are different certainties)."""
    if not ci or len(ci) != 2:
        return ""
    text = f"[{fmt_number(ci[0])}, {fmt_number(ci[1])}]"
    return f"{text}, n = {n}" if isinstance(n, int) and not isinstance(n, bool) else text


def _metric(metric: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(metric, Mapping):
        return None
    ci = metric.get("ci95")
    return {
        "name": str(metric.get("name", "")),
        "value": fmt_number(metric.get("value")),
        "threshold": threshold_text(metric),
        "ci95": _interval(ci, metric.get("n")),
        "baselines": [(str(k), fmt_number(v)) for k, v in (metric.get("baselines") or {}).items()],
    }


def _charts(details: Mapping[str, Any], metric_name: str) -> list[Markup]:
    """SVG for each chart convention present in ``details``; malformed data becomes a note.

    ``details["chart_title"]`` and ``details["chart_y_label"]`` (optional) title the
    ``split_scores`` bars and their axis (default: the metric's name).
    """
    chart_title = str(details.get("chart_title") or "")
    y_label = str(details.get("chart_y_label") or metric_name or "score")
    makers = {
        "split_scores": lambda d: charts.grouped_bar_chart(
            d, chart_title or f"Forget vs retain: {metric_name or 'score'}", y_label,
            1.0 if all(0 <= (v or 0) <= 1 for g in d.values() for v in g.values()) else None),
        "roc": lambda d: charts.roc_chart(d, "ROC of membership scores"),
        "curves": lambda d: charts.line_chart(
            {k: (v[0], v[1]) for k, v in d["series"].items()}, d.get("title", ""),
            d.get("x_label", ""), d.get("y_label", "")),
        "histograms": lambda d: charts.histogram(
            d["series"], int(d.get("bins", 20)), d.get("title", ""), d.get("x_label", "")),
    }
    out: list[Markup] = []
    for key, make in makers.items():
        if details.get(key):
            try:
                out.append(Markup(make(details[key])))
            except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
                note = Markup('<p class="note">Chart “{}” could not be drawn: {}</p>')
                out.append(note.format(key, exc))
    return out


def _table(rows: Any, limit: int) -> dict[str, Any] | None:
    if not isinstance(rows, list) or not rows:
        return None
    dicts = [r for r in rows if isinstance(r, Mapping)]
    columns = list(dict.fromkeys(str(k) for r in dicts[:limit] for k in r))
    body = [[_clip(fmt_number(r.get(c)), 200) for c in columns] for r in dicts[:limit]]
    return {"columns": columns, "rows": body, "total": len(dicts)}


def _tables(tables: Any) -> list[tuple[str, dict[str, Any]]]:
    """``details["tables"]``: {title: rows}, each rendered whole (up to TABLE_ROWS rows)."""
    if not isinstance(tables, Mapping):
        return []
    rendered = [(str(title), _table(rows, TABLE_ROWS)) for title, rows in tables.items()]
    return [(title, table) for title, table in rendered if table]


def _artifact(path: Any) -> dict[str, Any]:
    href = safe_href(path)
    return {"path": str(path), "href": href,
            "image": bool(href) and str(path).lower().endswith(IMAGE_SUFFIXES)}


def _finding(f: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The template's view of one finding, with every optional field defaulted."""
    status, severity = str(f.get("status", "")), str(f.get("severity", "info"))
    metric = _metric(f.get("metric"))
    details = f.get("details") if isinstance(f.get("details"), Mapping) else {}
    evidence = [e for e in f.get("evidence") or [] if isinstance(e, Mapping)]
    probe = str(f.get("probe", "?"))
    return {
        "anchor": f"f{index}-" + re.sub(r"[^A-Za-z0-9_.-]", "-", probe),
        "probe": probe, "suite": str(f.get("suite") or "other"), "title": str(f.get("title", "")),
        "status": status, "severity": severity, "rank": _rank(severity),
        "status_cls": _cls("st", status, STATUSES), "sev_cls": _cls("sev", severity, SEVERITIES),
        "edge": _edge(status, severity),
        "summary": str(f.get("summary", "")), "metric": metric,
        "evidence": [{"input": _clip(e.get("input")), "output": _clip(e.get("output")),
                      "expected": _clip(e.get("expected")), "score": fmt_number(e.get("score"))}
                     for e in evidence[:EVIDENCE_ROWS]],
        "evidence_total": len(evidence),
        "charts": _charts(details, metric["name"] if metric else ""),
        "tables": _tables(details.get("tables")),
        "per_item": _table(details.get("per_item"), PER_ITEM_ROWS),
        "details": [(str(k), _clip(fmt_number(v), 200)) for k, v in details.items()
                    if k not in CHART_KEYS and (v is None or isinstance(v, str | int | float))],
        "traceback": _clip(details.get("traceback"), 6000) if details.get("traceback") else "",
        "artifacts": [_artifact(a) for a in f.get("artifacts") or []],
        "references": [str(r) for r in f.get("references") or []],
        "remediation": str(f.get("remediation") or ""),
        "duration": f"{fmt_number(f.get('duration_s'))} s" if f.get("duration_s") else "—",
    }


def _summary(views: list[dict[str, Any]], run: Mapping[str, Any]) -> dict[str, Any]:
    active = [v for v in views if v["status"] in FAILING]
    worst = max(active, key=lambda v: v["rank"])["severity"] if active else None
    fail_on = run.get("fail_on")
    gate = None
    if fail_on in SEVERITIES:
        n = sum(fails_gate(v, fail_on) for v in active)
        gate = f"{n} failing finding(s) at or above the --fail-on gate ({fail_on})."
    return {
        "worst": worst, "worst_cls": _cls("sev", worst or "", SEVERITIES),
        "edge": _edge("fail", worst) if worst else "edge-pass",
        "none_text": f"No failing findings at or above {fail_on or 'info'} severity.",
        "gate": gate,
        "inconclusive": sum(v["status"] == "inconclusive" for v in views),
        "by_status": [(s, _cls("st", s, STATUSES), sum(v["status"] == s for v in views))
                      for s in STATUSES],
        "by_severity": [(s, _cls("sev", s, SEVERITIES),
                         sum(v["severity"] == s for v in active)) for s in reversed(SEVERITIES)],
        "top": sorted(active, key=lambda v: (-v["rank"], STATUS_ORDER[v["status"]]))[:3],
    }


def _run_record(run: Mapping[str, Any]) -> dict[str, Any]:
    target = run.get("target") if isinstance(run.get("target"), Mapping) else {}
    command = run.get("command") or []
    hashes = [("target", name, sha) for name, sha in (target.get("files") or {}).items()]
    for label, files in (run.get("inputs") or {}).items():
        hashes += [(str(label), name, sha) for name, sha in (files or {}).items()]
    return {
        "command": shlex.join(map(str, command)) if isinstance(command, list) else str(command),
        "tool_version": str(run.get("tool_version", "?")), "seed": run.get("seed", "—"),
        "device": run.get("device", "—"), "started": run.get("started") or "—",
        "finished": run.get("finished") or "—", "exit_code": run.get("exit_code"),
        "config": json.dumps(run.get("config") or {}, indent=2, sort_keys=True, default=str),
        "config_sha256": run.get("config_sha256") or "—",
        "libraries": sorted((str(k), str(v)) for k, v in (run.get("libraries") or {}).items()),
        "hashes": hashes,
        "target_name": str(target.get("name") or Path(str(target.get("path", "?"))).name),
        "target_path": str(target.get("path", "?")), "kind": str(target.get("kind", "?")),
        "suite": str(run.get("suite", "?")),
        "served": _served(target.get("served")),
        "prompt_format": _prompt_format(run.get("prompt_format")),
        "scoring": _scoring(run.get("scoring")),
        "severity_policy": policy_text(),
    }


def _served(record: Any) -> dict[str, str]:
    """The view of a model audited through an endpoint: what was reached, what the server
    offered, and, in plain words, that its weights were never seen."""
    if not isinstance(record, Mapping):
        return {}
    capabilities = record.get("capabilities")
    offered = sorted(str(k) for k, v in (capabilities or {}).items() if v is True) \
        if isinstance(capabilities, Mapping) else []
    fingerprint = record.get("fingerprint")
    digest = fingerprint.get("sha256") if isinstance(fingerprint, Mapping) else None
    return {"url": str(record.get("url", "?")), "model": str(record.get("served_model", "?")),
            "capabilities": ", ".join(offered) or "none",
            "fingerprint": str(digest or "not measured"),
            "statement": "This model was audited through its endpoint: its weights were not "
                         "seen, so no file hashes identify it. The behavioural fingerprint "
                         "(its log-probs of fixed texts) identifies what answered; probes "
                         "that need the weights or the whole vocabulary's distribution were "
                         "skipped, each naming why."}


def _scoring(record: Any) -> dict[str, str]:
    """The view of the run's scoring profile (``redteam.core.text_scoring``): which benchmark's
    scorer compared the generated answers with the references, and its version."""
    if not isinstance(record, Mapping) or not record.get("profile"):
        return {}
    return {k: str(record.get(k) or "") for k in ("profile", "metric", "scorer", "version",
                                                  "source")}


def _prompt_format(record: Any) -> dict[str, Any]:
    """The view of the run's prompt format: name, system prompt, example, and how it was chosen
    (the candidates tried and their retain scores)."""
    if not isinstance(record, Mapping):
        return {}
    view = {k: str(record.get(k) or "") for k in ("name", "system_prompt", "example")}
    calibration = record.get("calibration")
    calibration = calibration if isinstance(calibration, Mapping) else {}
    candidates = [c for c in calibration.get("candidates") or [] if isinstance(c, Mapping)]
    view["candidates"] = [(str(c.get("name", "?")), fmt_number(c.get("retain_score")))
                          for c in candidates]
    view["requested"] = str(calibration.get("requested") or "")
    view["scored_on"] = (f"{fmt_number(calibration.get('items'))} retain questions asked of "
                         f"the {calibration.get('model')} model") if candidates else ""
    measurable = calibration.get("measurable")
    view["check"] = {True: "the model answers its retain questions in this format",
                     False: "the model answers almost none of its retain questions in this "
                            "format: the knowledge probes' passes are inconclusive",
                     None: "not checked (no retain questions with answers)"}.get(measurable, "")
    if calibration and measurable is not None:
        view["check"] += (f" (retain ROUGE-L recall {fmt_number(calibration.get('retain_score'))}"
                          f", needed {fmt_number(calibration.get('min_retain_score'))})")
    return view


def render_report(document: Mapping[str, Any]) -> str:
    """The self-contained HTML report of one run, from its findings.json document."""
    run = document.get("run") if isinstance(document.get("run"), Mapping) else {}
    raw = [f for f in document.get("findings") or [] if isinstance(f, Mapping)]
    views = [_finding(f, i) for i, f in enumerate(raw)]
    views.sort(key=lambda v: (STATUS_ORDER.get(v["status"], 5), -v["rank"]))
    suites: dict[str, list[dict[str, Any]]] = {}
    for view in views:
        suites.setdefault(view["suite"], []).append(view)
    skipped = [(v["probe"], v["summary"]) for v in views if v["status"] == "skipped"]
    skipped += [(str(p), str(r)) for p, r in (run.get("probes_skipped") or {}).items()]
    return _env().get_template("report.html.j2").render(
        csp=CSP, css=_css(), run=_run_record(run), summary=_summary(views, run),
        suites=[{"name": name, "anchor": "suite-" + re.sub(r"[^A-Za-z0-9_-]", "-", name),
                 "findings": items} for name, items in suites.items()],
        skipped=skipped)


def load_document(run_dir: Path) -> dict[str, Any]:
    """Read and check ``run_dir/findings.json``; bad input is an InputError naming the file."""
    path = Path(run_dir) / "findings.json"
    if not path.is_file():
        raise InputError(f"{run_dir}: not a redteam run directory (no findings.json)")
    document = read_json_file(path, "findings.json", allow_nan=True)
    try:
        return check_document(document, str(path))
    except ValueError as exc:
        raise InputError(str(exc)) from None


def write_report(run_dir: Path, document: Mapping[str, Any] | None = None) -> Path:
    """Render ``run_dir/report.html`` atomically (from findings.json when no document is given)."""
    run_dir = Path(run_dir)
    if document is None:
        document = load_document(run_dir)
        try:
            html = render_report(document)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            raise InputError(f"{run_dir / 'findings.json'}: cannot be rendered; a probe's "
                             f"details are malformed ({type(exc).__name__}: {exc})") from None
    else:
        html = render_report(document)
    return atomic_write_text(run_dir / "report.html", html)


def cells_from_documents(
    documents: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], dict[tuple[str, str], dict[str, Any]]]:
    """Rows (probe names, first-seen order) and cells of the index from variant -> document."""
    rows: dict[str, None] = {}
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for variant, document in documents.items():
        for f in document.get("findings") or []:
            metric, probe = f.get("metric") or {}, str(f.get("probe", "?"))
            rows[probe] = None
            cells[(probe, variant)] = {
                "status": f.get("status"), "severity": f.get("severity"),
                "metric_name": metric.get("name"), "value": metric.get("value"),
                "threshold": threshold_text(metric)}
    return list(rows), cells


def _index_columns(columns: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": str(c["name"]), "href": safe_href(c.get("report")),
             "exit_code": c.get("exit_code"), "description": str(c.get("description") or ""),
             "worst": c.get("worst_severity"),
             "worst_cls": _cls("sev", str(c.get("worst_severity")), SEVERITIES)} for c in columns]


def _index_table(rows: Sequence[str], cols: list[dict[str, Any]],
                 cells: Mapping[tuple[str, str], Mapping[str, Any]]) -> list[tuple[str, list]]:
    table = []
    for row in rows:
        line = []
        for col in cols:
            cell = cells.get((row, col["name"]))
            line.append(None if cell is None else {
                "status": str(cell.get("status")),
                "status_cls": _cls("st", str(cell.get("status")), STATUSES),
                "severity": str(cell.get("severity") or ""),
                "sev_cls": _cls("sev", str(cell.get("severity")), SEVERITIES),
                "value": fmt_number(cell.get("value")),
                "hint": f"{cell.get('metric_name') or 'metric'}; {cell.get('threshold') or '—'}"})
        table.append((str(row), line))
    return table


def render_index(rows: Sequence[str], columns: Sequence[Mapping[str, Any]],
                 cells: Mapping[tuple[str, str], Mapping[str, Any]], title: str,
                 extra_tables: Sequence[Mapping[str, Any]] = ()) -> str:
    """A table of probes (rows) across variants (columns), each header linking to its report.

    ``columns``: dicts with "name", "report" (relative link to the variant's report.html),
    "exit_code", "worst_severity" (or None) and "description". ``cells`` maps (probe, variant
    name) to {"status", "severity", "metric_name", "value", "threshold"}; absent cells show a dash.
    ``extra_tables``: more tables, each {"title", "note", "rows", "cells"} and optionally its own
    "columns" (default: the main table's), e.g. which attacks bring the knowledge back.
    """
    cols = _index_columns(columns)
    extras = []
    for extra in extra_tables:
        own = _index_columns(extra["columns"]) if extra.get("columns") else cols
        extras.append({"title": str(extra["title"]), "note": str(extra.get("note") or ""),
                       "columns": own, "table": _index_table(extra["rows"], own, extra["cells"])})
    return _env().get_template("index.html.j2").render(
        csp=CSP, css=_css(), title=title, columns=cols, table=_index_table(rows, cols, cells),
        extras=extras)


def write_index(path: Path, rows: Sequence[str], columns: Sequence[Mapping[str, Any]],
                cells: Mapping[tuple[str, str], Mapping[str, Any]],
                title: str = "redteam demo",
                extra_tables: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Write the variant index atomically; report links in ``columns`` are relative to it."""
    return atomic_write_text(Path(path), render_index(rows, columns, cells, title, extra_tables))
