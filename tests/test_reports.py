"""The HTML report and its charts: self-contained, escaped, complete, written atomically."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from redteam.core.errors import InputError
from redteam.core.findings import Evidence, Finding, Metric, RunRecord, findings_document
from reports import charts
from reports.html import (
    CSP,
    cells_from_documents,
    render_index,
    render_report,
    threshold_text,
    write_index,
    write_report,
)

XSS = "<script>alert(1)</script>"
SKIP_REASON = "needs the 'aliases' field, absent from the audit data"


def _document() -> dict:
    run = RunRecord(
        tool_version="0.1.0",
        command=["redteam", "audit", "zoo/tofu-ga", "--suite", "unlearning"],
        suite="unlearning",
        target={"path": "zoo/tofu-ga", "name": "tofu-ga", "kind": "causal-lm",
                "files": {"model.safetensors": "ab" * 32, "config.json": "cd" * 32}},
        config={"probes": {"unlearning.knowledge_qa": {"threshold": 0.3}}}, fail_on="high",
        config_sha256="ef" * 32,
        seed=7,
        libraries={"torch": "2.14.1", "transformers": "4.57.6"},
        started="2025-01-01T00:00:00Z",
        finished="2025-01-01T00:01:00Z",
        inputs={"data": {"audit.jsonl": "12" * 32}, "reference": {"model.safetensors": "34" * 32}},
        exit_code=1,
    )
    findings = [
        Finding(
            probe="unlearning.qa_leak", suite="unlearning", title="Forgotten answers still leak",
            status="fail", severity="high",
            metric=Metric("forget_rouge_l", 0.62, 0.3, True, [0.55, 0.69],
                          {"reference": 0.81, "retrain": 0.12}, n=40),
            summary="The unlearned model still answers 62% of forget questions.",
            evidence=[Evidence("Who wrote 'Moonfall'?", XSS, "Basil Mahfouz", 0.93)]
            + [Evidence(f"q{i}", f"a{i}", f"e{i}", 0.5) for i in range(14)],
            details={
                "split_scores": {"target": {"forget": 0.62, "retain": 0.8},
                                 "reference": {"forget": 0.81, "retain": 0.82},
                                 "retrain": {"forget": 0.12, "retain": 0.79}},
                "per_item": [{"id": i, "rouge": 0.1 * i} for i in range(20)],
                "target_label": "forget",
            },
            artifacts=["artifacts/qa_leak.csv", "artifacts/trigger.png", "https://evil.example/x.png"],
            references=["arXiv:2401.06121"],
            remediation="Re-run unlearning with a stronger objective (e.g. NPO).",
            duration_s=3.2,
        ),
        Finding(
            probe="unlearning.membership", suite="unlearning", title="Membership inference",
            status="pass", severity="medium",
            metric=Metric("auc", 0.52, 0.6, True),
            details={"roc": {"loss": {"fpr": [0, 0.5, 1], "tpr": [0, 0.55, 1], "auc": 0.52}}},
        ),
        Finding(probe="unlearning.aliases", suite="unlearning", title="Alias probing",
                status="skipped", summary=SKIP_REASON),
        Finding(probe="unlearning.relearn", suite="unlearning", title="Relearning attack",
                status="error", severity="low",
                summary="RuntimeError: CUDA out of memory",
                details={"traceback": "Traceback (most recent call last): ..."}),
    ]
    return findings_document(run, findings)


@pytest.fixture()
def document() -> dict:
    return _document()


@pytest.fixture()
def html(document: dict) -> str:
    return render_report(document)


def test_model_output_is_escaped(html: str) -> None:
    assert "&lt;script&gt;alert(1)" in html
    assert "<script" not in html.lower()


def test_self_contained(html: str) -> None:
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'.replace(
        "'", "&#39;") in html
    assert "default-src &#39;none&#39;" in html
    assert not re.search(r'(src|href)\s*=\s*"?\s*(https?:|//|javascript:)', html, re.I)
    assert "url(" not in html and "@import" not in html
    assert "http://" not in html
    assert "https://" not in html.replace("https://evil.example/x.png", "")
    # The absolute artifact link is shown as text only, never as a link or an image.
    assert "https://evil.example/x.png" in html
    assert 'src="artifacts/trigger.png"' in html


def test_summary_and_sections(html: str) -> None:
    summary = html.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert "Overall risk" in summary and ">high<" in summary
    assert "Forgotten answers still leak" in summary
    assert "≤ 0.30 passes" in html
    assert "[0.55, 0.69], n = 40" in html and "retrain 0.12" in html
    assert 'id="skipped"' in html and SKIP_REASON.replace("'", "&#39;") in html
    assert "CUDA out of memory" in html
    assert "(first 10 of 15)" in html and "(first 15 of 20)" in html
    assert html.count("<svg") == 2
    assert "arXiv:2401.06121" in html and "NPO" in html


def test_run_record(html: str) -> None:
    record = html.split('id="run-record"', 1)[1]
    for text in ("ab" * 32, "12" * 32, "34" * 32, "ef" * 32, "audit.jsonl", "4.57.6",
                 "redteam audit zoo/tofu-ga --suite unlearning"):
        assert text in record


def test_no_failures_says_so(document: dict) -> None:
    document["findings"] = [f for f in document["findings"] if f["status"] == "pass"]
    html = render_report(document)
    assert "No failing findings at or above high severity." in html


def test_threshold_direction() -> None:
    assert threshold_text({"threshold": 0.9, "higher_is_worse": False}) == "≥ 0.90 passes"
    assert threshold_text({"threshold": None}) == "—"


def test_write_report_is_atomic(tmp_path: Path, document: dict) -> None:
    # read back, a findings.json may name only artifacts inside its run folder (the schema
    # refuses the fixture's link to another site: tests/test_hostile_outputs.py)
    for finding in document["findings"]:
        finding["artifacts"] = [a for a in finding["artifacts"] if "://" not in a]
    (tmp_path / "findings.json").write_text(json.dumps(document), encoding="utf-8")
    path = write_report(tmp_path)
    assert path == tmp_path / "report.html"
    assert "&lt;script&gt;alert(1)" in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.json", "report.html"]


def test_write_report_rejects_bad_dirs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a redteam run directory"):
        write_report(tmp_path)
    (tmp_path / "findings.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="not valid JSON"):
        write_report(tmp_path)
    (tmp_path / "findings.json").write_text('{"schema": 99}', encoding="utf-8")
    with pytest.raises(InputError, match="schema: expected 1"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_index_links_each_variant(tmp_path: Path, document: dict) -> None:
    rows, cells = cells_from_documents({"ga": document, "npo": document})
    columns = [{"name": name, "report": f"{name}/report.html", "exit_code": 1,
                "worst_severity": "high", "description": f"{name} <b>variant</b>"}
               for name in ("ga", "npo", "retrain")]
    html = render_index(rows, columns, cells, "Demo")
    assert 'href="ga/report.html"' in html and 'href="npo/report.html"' in html
    assert 'href="retrain/report.html"' in html
    assert "unlearning.qa_leak" in html and "0.62" in html
    assert "&lt;b&gt;variant" in html and "<script" not in html
    path = write_index(tmp_path / "index.html", rows, columns, cells)
    assert path.read_text(encoding="utf-8").count("<tr>") == len(rows) + 2


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "svg"
    return root


def _texts(root: ET.Element) -> str:
    return " ".join(t.text or "" for t in root.iter("text"))


def test_grouped_bar_chart() -> None:
    svg = charts.grouped_bar_chart({"target": {"forget": 0.9, "retain": 0.8},
                                    "retrain <x>": {"forget": 0.1, "retain": 0.7}},
                                   "Forget & retain", "ROUGE-L")
    root = _parse(svg)
    assert "forget" in _texts(root) and "retrain <x>" in _texts(root)
    assert len(root.findall("rect")) == 4 + 2  # bars + legend swatches


def test_roc_chart() -> None:
    root = _parse(charts.roc_chart({"loss": {"fpr": [0, 0.2, 1], "tpr": [0, 0.7, 1],
                                             "auc": 0.84}}, "ROC"))
    assert "loss (AUC 0.840)" in _texts(root)
    assert root.find("polyline") is not None


def test_line_chart() -> None:
    root = _parse(charts.line_chart({"PGD": ([0, 2, 4, 8], [0.98, 0.7, 0.3, 0.05]),
                                     "FGSM": ([0, 8], [0.98, 0.4])},
                                    "Robust accuracy", "epsilon (/255)", "accuracy"))
    assert "PGD" in _texts(root) and "FGSM" in _texts(root)
    assert len(root.findall("polyline")) == 2


def test_histogram() -> None:
    root = _parse(charts.histogram({"members": [0.1, 0.2, 0.2, 0.9], "non-members": [0.5, 0.6]},
                                   5, "Loss", "loss"))
    assert "members" in _texts(root) and "non-members" in _texts(root)


def test_charts_without_data_say_so_and_draw_nothing() -> None:
    for svg in (charts.grouped_bar_chart({}, "empty", "y"),
                charts.line_chart({"a": ([], [])}, "empty", "x", "y"),
                charts.histogram({"a": [float("nan")]}, 10, "empty", "x")):
        root = _parse(svg)
        assert "no data" in _texts(root) and root.findtext("title") == "empty"
        assert not [e for e in root.iter() if e.tag in ("rect", "polyline", "circle", "path")]


def test_a_perfect_share_is_never_shown_as_certain(document: dict) -> None:
    """12 of 12 is shown with its exact interval and its count, not as [1, 1]."""
    from redteam.core.metrics import share_ci

    metric = document["findings"][0]["metric"]
    metric.update(value=1.0, ci95=share_ci([1.0] * 12), n=12)
    html = render_report(document)
    assert "[0.74, 1], n = 12" in html or "[0.7353, 1], n = 12" in html
    assert "[1, 1]" not in html


def test_figures_page_lists_every_run_and_finding(tmp_path: Path, document: dict) -> None:
    """The demo's figures.md: a section per run, a row per finding with its status, severity,
    value, threshold and interval, read from each run's findings.json (never re-typed)."""
    from reports.figures import write_figures

    for finding in document["findings"]:
        finding["artifacts"] = [a for a in finding["artifacts"] if "://" not in a]
    for name in ("ga", "npo"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "findings.json").write_text(json.dumps(document), encoding="utf-8")
    text = write_figures(tmp_path, "demo").read_text(encoding="utf-8")
    assert text.count("\n## ") == 2 and "## ga" in text and "## npo" in text
    for finding in document["findings"]:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{finding['probe']}`")]
        assert len(rows) == 2 and all(f"| {finding['status']} | {finding['severity']} |" in row
                                      for row in rows)
    metric = next(f["metric"] for f in document["findings"] if f.get("metric"))
    from reports.html import fmt_number

    assert f"| {fmt_number(metric['value'])} | {fmt_number(metric['threshold'])} |" in text
