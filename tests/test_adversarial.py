"""The image adversarial suite (torchattacks): budgets hold, curves fall, verdicts can go both
ways, and the report carries the curve, the per-class table and the examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from redteam.core.vision import label_ids, load_image_folder
from redteam.engine import AuditRequest, run_audit
from redteam.probes.adversarial import PGDL2, CarliniWagner, PGDLinf, evaluation_set, predict
from redteam.targets import load_target

SMALL = {"max_images": 48, "epsilons": [2 / 255, 8 / 255, 16 / 255]}


@pytest.fixture(scope="module")
def digits(backdoor_zoo):
    target = load_target(backdoor_zoo["clean"])
    data = load_image_folder(backdoor_zoo["test-data"], target.model.size,
                             label_ids(target.model.hf_model.config))
    return target, data


def test_attacks_stay_within_their_budget_and_the_pixel_range(digits):
    target, data = digits
    images, labels = data.images[:32], data.labels[:32]
    linf = PGDLinf().attack_batches(target.model, images, labels, 8 / 255, seed=0)
    assert (linf - images).abs().max() <= 8 / 255 + 1e-6
    l2 = PGDL2().attack_batches(target.model, images, labels, 0.5, seed=0)
    assert (l2 - images).flatten(1).norm(dim=1).max() <= 0.5 + 1e-4
    for adversarial in (linf, l2):
        assert adversarial.min() >= 0 and adversarial.max() <= 1
    fooled = (predict(target.model, linf, 64) != labels).float().mean()
    assert fooled > 0.3  # an undefended classifier does break at 8/255


def test_evaluation_set_is_balanced_and_deterministic(digits):
    _, data = digits
    images, labels = evaluation_set(data, 50, seed=3)
    again, _ = evaluation_set(data, 50, seed=3)
    counts = np.bincount(labels.numpy(), minlength=10)
    assert len(labels) == 50 and counts.max() - counts.min() <= 1
    assert torch.equal(images, again)


def test_adversarial_suite_reports_monotone_curves_and_fails_the_undefended_model(
        backdoor_zoo, tmp_path):
    # Each verdict is taken at a budget an undefended classifier is known not to withstand,
    # with room: builds of the zoo differ by a few images (PGD-L∞ at 8/255 kept 15 % of 48 on
    # one build, under 12.5 % on another), so the iterative L-inf attacks are judged at 16/255,
    # one FGSM step at 32/255, the L2 ones at L2 2.0.
    settings = {"adversarial.pgd_linf": {**SMALL, "reference_epsilon": 16 / 255},
                "adversarial.autoattack": {"max_images": 12, "epsilons": [16 / 255],
                                           "reference_epsilon": 16 / 255},
                "adversarial.fgsm": {"max_images": 48, "reference_epsilon": 32 / 255,
                                     "epsilons": [*SMALL["epsilons"], 32 / 255]}}
    l2 = {"max_images": 48, "epsilons": [0.25, 0.5, 1.0, 2.0], "reference_epsilon": 2.0}
    settings["adversarial.pgd_l2"] = l2
    settings["adversarial.cw"] = {**l2, "steps": 30}
    result = run_audit(AuditRequest(model=backdoor_zoo["clean"], suite="adversarial",
                                    data=backdoor_zoo["test-data"], out=tmp_path / "run",
                                    device="cpu", quiet=True, settings=settings))
    findings = {f.probe: f for f in result.findings}
    assert set(findings) == {"adversarial.fgsm", "adversarial.pgd_linf", "adversarial.pgd_l2",
                             "adversarial.cw", "adversarial.autoattack"}
    for finding in findings.values():  # robust accuracy far under the 0.5 bound: critical
        assert (finding.status, finding.severity) == ("fail", "critical"), finding.summary
        assert finding.metric.value <= 0.125 and finding.metric.threshold == 0.5
    curves = {}
    for probe, finding in findings.items():
        series = next(iter(finding.details["curves"]["series"].values()))
        curves[probe] = dict(zip(*series))
        values = list(series[1])
        assert values == sorted(values, reverse=True), probe  # monotone in ε
    assert curves["adversarial.pgd_linf"][16 / 255] <= 0.1
    assert curves["adversarial.pgd_linf"][8 / 255] <= curves["adversarial.fgsm"][8 / 255] + 0.05
    pgd = findings["adversarial.pgd_linf"]
    assert result.exit_code == 1
    assert pgd.metric.baselines["clean accuracy"] > 0.9 and pgd.metric.ci95
    classes = pgd.details["tables"]["Smallest budget that breaks each class"]
    assert len(classes) == 10 and all(row["images"] > 0 for row in classes)
    assert pgd.artifacts and all((tmp_path / "run" / a).is_file() for a in pgd.artifacts)
    assert "Robust accuracy under PGD-L∞" in (tmp_path / "run" / "report.html").read_text()


def test_verdict_passes_at_a_budget_the_model_withstands(backdoor_zoo, tmp_path):
    settings = {"adversarial.pgd_linf": {**SMALL, "reference_epsilon": 1 / 255}}
    result = run_audit(AuditRequest(model=backdoor_zoo["clean"], suite="adversarial",
                                    probes=["adversarial.pgd_linf"],
                                    data=backdoor_zoo["test-data"], out=tmp_path / "run",
                                    device="cpu", quiet=True, settings=settings))
    (finding,) = result.findings
    assert finding.status == "pass" and result.exit_code == 0
    assert finding.metric.value > 0.9


def test_cw_counts_an_image_broken_only_within_the_budget(digits):
    target, data = digits
    probe = CarliniWagner({"steps": 20})
    images, labels = data.images[:24], data.labels[:24]
    broken, clipped = probe.broken_at(target.model, images, labels, [0.1, 1.0, 3.0], seed=0)
    assert broken.shape == (24, 3) and (broken[:, 0] <= broken[:, 2]).all()
    for epsilon, adversarial in clipped.items():
        assert (adversarial - images).flatten(1).norm(dim=1).max() <= epsilon + 1e-4


def test_language_model_and_missing_data_are_not_attacked(tiny_lm, backdoor_zoo, tmp_path):
    result = run_audit(AuditRequest(model=backdoor_zoo["clean"], suite="adversarial",
                                    out=tmp_path / "nodata", device="cpu", quiet=True))
    assert {f.status for f in result.findings} == {"skipped"} and result.exit_code == 3
    assert "needs a folder of clean images" in result.findings[0].summary
    result = run_audit(AuditRequest(model=tiny_lm, suite="adversarial", out=tmp_path / "lm",
                                    device="cpu", quiet=True))
    assert result.exit_code == 3 and not [f for f in result.findings
                                          if f.probe in ("adversarial.fgsm", "adversarial.cw")]


def test_bad_input_to_the_adversarial_suite_exits_2(backdoor_zoo, tmp_path, capsys):
    import shutil

    from redteam.cli import main

    broken = tmp_path / "broken"
    shutil.copytree(backdoor_zoo["test-data"], broken)
    (broken / "3" / "zz.png").write_bytes(b"not an image")
    config = tmp_path / "audit.toml"
    config.write_text('[probes."adversarial.pgd_linf"]\nstep = 5\n')
    cases = [(["--data", str(broken)], "zz.png: unreadable image"),
             (["--data", str(tmp_path / "missing")], "image folder not found"),
             (["--data", str(backdoor_zoo["test-data"]), "--config", str(config)],
              "unknown setting 'step'")]
    for extra, message in cases:
        code = main(["audit", str(backdoor_zoo["clean"]), "--suite", "adversarial",
                     "--out", str(tmp_path / "run"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
