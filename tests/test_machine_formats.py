"""SARIF 2.1.0 and JUnit XML from a run: the SARIF validates against the official OASIS schema
(errata 01, vendored under tests/schemas), the JUnit is read back by a JUnit reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redteam.cli import main
from redteam.engine import AuditRequest, run_audit
from reports.machine import parse_formats, render_sarif
from tests.conftest import write_jsonl
from tests.test_engine import ROWS

SCHEMA = Path(__file__).parent / "schemas" / "sarif-schema-2.1.0.json"
PROBES = ["unlearning.knowledge_qa", "unlearning.verbatim", "unlearning.crash",
          "unlearning.parametric_traces"]


@pytest.fixture
def run(tiny_lm, tmp_path, monkeypatch):
    """A run with a pass or fail, a crash (error) and a skip, written with every format."""
    from redteam.probes import REGISTRY, Probe

    class Crash(Probe):
        name, suite, title, goal = "unlearning.crash", "unlearning", "Crash", "crash on purpose"

        def run(self, target, data, ctx):
            raise RuntimeError("boom")

    monkeypatch.setitem(REGISTRY, Crash.name, Crash)
    data = write_jsonl(tmp_path / "audit.jsonl", ROWS)
    result = run_audit(AuditRequest(model=tiny_lm, suite="unlearning", data=data,
                                    out=tmp_path / "run", probes=PROBES, device="cpu",
                                    quiet=True, formats=parse_formats("html,sarif,junit")))
    return result


def test_sarif_validates_against_the_official_schema(run):
    import jsonschema

    sarif = json.loads((run.out_dir / "findings.sarif").read_text())
    jsonschema.validate(sarif, json.loads(SCHEMA.read_text()))
    (log,) = sarif["runs"]
    rules = [rule["id"] for rule in log["tool"]["driver"]["rules"]]
    assert rules == PROBES  # one rule per probe that reported
    levels = {r["ruleId"]: r["level"] for r in log["results"]}
    assert levels["unlearning.crash"] == "error"
    assert "unlearning.parametric_traces" not in levels  # skipped: not a result
    statuses = {f.probe: f.status for f in run.findings}
    assert set(levels) == {p for p, s in statuses.items() if s in ("fail", "error",
                                                                    "inconclusive")}
    hashes = [a["hashes"]["sha-256"] for a in log["artifacts"]]
    assert hashes and all(len(h) == 64 for h in hashes)  # model and data files, hashed
    assert log["invocations"][0]["exitCode"] == run.exit_code


def test_junit_is_read_by_a_junit_reader(run):
    from junitparser import Error, Failure, JUnitXml, Skipped

    xml = JUnitXml.fromfile(str(run.out_dir / "junit.xml"))
    (suite,) = list(xml)
    assert suite.name == "unlearning" and suite.tests == len(PROBES)
    outcome = {}
    for case in suite:
        kinds = {type(r) for r in case.result}
        outcome[case.name] = ("error" if Error in kinds else "fail" if Failure in kinds
                              else "skipped" if Skipped in kinds else "pass")
    expected = {f.probe: {"inconclusive": "skipped"}.get(f.status, f.status)
                for f in run.findings}
    assert outcome == expected
    assert suite.errors == 1 and suite.skipped >= 1


def test_report_writes_the_formats_later_and_bad_formats_exit_2(run, capsys):
    (run.out_dir / "findings.sarif").unlink()
    assert main(["report", str(run.out_dir), "--format", "sarif"]) == 0
    assert (run.out_dir / "findings.sarif").is_file()
    assert render_sarif(json.loads((run.out_dir / "findings.json").read_text())) == \
        json.loads((run.out_dir / "findings.sarif").read_text())
    capsys.readouterr()
    assert main(["report", str(run.out_dir), "--format", "pdf"]) == 2
    assert "'pdf' is not a format" in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_runs(unlearning_zoo, tmp_path_factory):
    """The retrained and the original model audited alike (the same data and settings)."""
    root = tmp_path_factory.mktemp("diff")
    zoo = unlearning_zoo
    for model in ("retrain", "original"):
        run_audit(AuditRequest(model=zoo[model], suite="unlearning", data=zoo["audit"],
                               retrain=zoo["retrain"], out=root / model, device="cpu",
                               quiet=True, probes=["unlearning.knowledge_qa",
                                                   "unlearning.verbatim"]))
    return root


def test_diff_lists_new_failures_and_exits_1(two_runs, tmp_path, capsys):
    out = tmp_path / "diff.html"
    code = main(["report", "diff", str(two_runs / "retrain"), str(two_runs / "original"),
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "new failure  unlearning.knowledge_qa: pass -> fail" in printed
    diff = json.loads(out.with_suffix(".json").read_text())
    row = next(r for r in diff["rows"] if r["probe"] == "unlearning.knowledge_qa")
    assert row["delta"] == pytest.approx(row["value_b"] - row["value_a"])
    assert row["intervals_overlap"] is False  # 0 vs 1 recall: far beyond the noise
    assert "new failure" in out.read_text() and "<script" not in out.read_text()
    back = main(["report", "diff", str(two_runs / "original"), str(two_runs / "retrain")])
    assert back == 0 and "fixed" in capsys.readouterr().out


def test_incomparable_runs_are_refused_with_the_reason(two_runs, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(two_runs / "original", other)
    document = json.loads((other / "findings.json").read_text())
    document["run"]["config"] = {"probes": {"unlearning.knowledge_qa": {"threshold": 0.9}}}
    (other / "findings.json").write_text(json.dumps(document))
    assert main(["report", "diff", str(two_runs / "retrain"), str(other)]) == 2
    assert "probe settings differ (unlearning.knowledge_qa)" in capsys.readouterr().err
    document["run"]["config"] = {}
    document["run"]["inputs"]["data"] = {"audit.jsonl": "0" * 64}
    (other / "findings.json").write_text(json.dumps(document))
    assert main(["report", "diff", str(two_runs / "retrain"), str(other)]) == 2
    assert "the audit data differ" in capsys.readouterr().err


def test_diff_names_a_probe_whose_version_changed(two_runs, tmp_path, capsys):
    """The run record carries each probe's version; a diff across two versions of a probe says
    the change may be the probe's, and one across the same versions says nothing."""
    import shutil

    from redteam.probes import REGISTRY

    before = json.loads((two_runs / "original" / "findings.json").read_text())
    assert before["run"]["probe_versions"] == {
        name: REGISTRY[name].version for name in ("unlearning.knowledge_qa",
                                                  "unlearning.verbatim")}
    newer = tmp_path / "newer"
    shutil.copytree(two_runs / "original", newer)
    document = json.loads((newer / "findings.json").read_text())
    document["run"]["probe_versions"]["unlearning.verbatim"] += 1
    (newer / "findings.json").write_text(json.dumps(document))
    out = tmp_path / "diff.html"
    assert main(["report", "diff", str(two_runs / "original"), str(newer), "--out",
                 str(out)]) == 0
    diff = json.loads(out.with_suffix(".json").read_text())
    assert diff["probes_changed"] == ["unlearning.verbatim"]
    assert "probe version 1 → 2" in out.read_text()
    same = main(["report", "diff", str(two_runs / "original"), str(two_runs / "original"),
                 "--out", str(tmp_path / "same.html")])
    assert same == 0
    assert json.loads((tmp_path / "same.json").read_text())["probes_changed"] == []
