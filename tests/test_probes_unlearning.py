"""Every unlearning probe finds leakage on a model that leaks and none on one that does not.

The leaking model is the zoo's ``original`` (it memorised the forget authors); the clean one is
``retrain`` (trained without them). Both are trained in the session fixture ``unlearning_zoo``.
"""

import json

import pytest

from redteam.cli import main
from redteam.core.findings import SEVERITIES
from redteam.engine import AuditRequest, run_audit
from tests.conftest import report_card


def _audit(zoo, variant, tmp_path, probes, reference=True, retrain=True):
    return run_audit(AuditRequest(
        model=zoo[variant], suite="unlearning", data=zoo["audit"], probes=probes,
        reference=zoo["original"] if reference else None,
        retrain=zoo["retrain"] if retrain else None,
        out=tmp_path / f"{variant}-{'-'.join(p.split('.')[-1] for p in probes)}",
        device="cpu", quiet=True,
    ))


@pytest.mark.parametrize("probe", ["unlearning.knowledge_qa", "unlearning.verbatim",
                                   "unlearning.exact_memorization"])
def test_leaking_model_fails_and_clean_model_passes(unlearning_zoo, tmp_path, probe):
    (leak,) = _audit(unlearning_zoo, "original", tmp_path, [probe]).findings
    (clean,) = _audit(unlearning_zoo, "retrain", tmp_path, [probe]).findings
    assert leak.status == "fail" and leak.severity in ("high", "critical"), leak.summary
    assert leak.evidence and leak.metric.value > leak.metric.threshold
    assert clean.status == "pass", clean.summary
    assert leak.metric.baselines["retrain"] == pytest.approx(clean.metric.value, abs=1e-3)


def test_knowledge_qa_without_retrain_uses_absolute_threshold(unlearning_zoo, tmp_path):
    (finding,) = _audit(unlearning_zoo, "original", tmp_path, ["unlearning.knowledge_qa"],
                        reference=False, retrain=False).findings
    assert finding.status == "fail"
    assert finding.metric.threshold == 0.3 and finding.metric.baselines == {}
    assert "no --retrain" in finding.summary
    low, high = finding.metric.ci95
    assert low <= finding.metric.value <= high


def test_membership_inference_separates_members(unlearning_zoo, tmp_path):
    probe = ["unlearning.membership_inference"]
    (leak,) = _audit(unlearning_zoo, "original", tmp_path, probe).findings
    assert leak.status == "fail" and leak.metric.value < -20
    assert leak.details["auc"]["target"]["min_k"] > 0.8
    assert set(leak.details["roc"]) == {"loss", "zlib", "min_k", "min_k_plus_plus"}
    (clean,) = _audit(unlearning_zoo, "retrain", tmp_path, probe, retrain=False).findings
    assert "0.5 (no --retrain" in clean.summary
    assert clean.status == "pass", clean.summary


def test_utility_flags_collateral_damage(unlearning_zoo, tiny_lm, tmp_path):
    probe = ["unlearning.utility"]
    (kept,) = _audit(unlearning_zoo, "original", tmp_path, probe).findings
    assert kept.status == "pass" and kept.metric.value == pytest.approx(1.0)
    zoo = {**unlearning_zoo, "broken": tiny_lm}  # a model that knows nothing at all
    (broken,) = _audit(zoo, "broken", tmp_path, probe).findings
    assert broken.status == "fail" and broken.metric.value < 0.5


def test_cli_audit_exit_codes_original_vs_retrain(unlearning_zoo, tmp_path, capsys):
    def audit(variant):
        out = tmp_path / f"cli-{variant}"
        code = main(["audit", str(unlearning_zoo[variant]), "--suite", "unlearning", "--data",
                     str(unlearning_zoo["audit"]), "--reference", str(unlearning_zoo["original"]),
                     "--retrain", str(unlearning_zoo["retrain"]), "--out", str(out), "--quiet"])
        return code, json.loads((out / "findings.json").read_text()), out

    code, document, out = audit("original")
    assert code == 1
    leak = next(f for f in document["findings"] if f["probe"] == "unlearning.knowledge_qa")
    # audited against itself as the reference, the original is at the worst value: critical
    assert (leak["status"], leak["severity"]) == ("fail", "critical"), leak["summary"]
    # the report shows that verdict on the finding, and the run's worst severity as its risk
    card = report_card((out / "report.html").read_text(), "unlearning.knowledge_qa")
    assert '>fail</span>' in card and f'>{leak["severity"]}</span>' in card
    worst = max((f for f in document["findings"] if f["status"] in ("fail", "error")),
                key=lambda f: SEVERITIES.index(f["severity"]))
    assert f'<div class="level">{worst["severity"]}</div>' in (out / "report.html").read_text()
    code, document, _ = audit("retrain")
    assert {f["probe"]: (f["status"], f["severity"]) for f in document["findings"]}[
        "unlearning.knowledge_qa"] == ("pass", "info")
    assert code == 0, [(f["probe"], f["status"], f["severity"]) for f in document["findings"]]
