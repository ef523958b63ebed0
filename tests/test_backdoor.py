"""The backdoor suite and `redteam expose` on the digits zoo: a backdoored and a clean model."""

import json
import shutil

import pytest
import torch

from redteam.cli import main
from redteam.core.vision import save_png
from redteam.engine import AuditRequest, run_audit
from redteam.targets import load_target

FAST = {"backdoor.trigger_recovery": {"steps": 120}}


@pytest.fixture(scope="module")
def badnets_run(backdoor_zoo, tmp_path_factory):
    """`redteam expose` on the BadNets model, with removal, run once for the module's tests."""
    from redteam.commands.expose import ExposeRequest, expose_model

    out = tmp_path_factory.mktemp("expose")
    before = load_target(backdoor_zoo["badnets"]).model.state_dict()
    result = expose_model(ExposeRequest(
        model=backdoor_zoo["badnets"], clean_data=backdoor_zoo["clean-data"],
        test_data=backdoor_zoo["test-data"], poisoned_data=backdoor_zoo["poisoned-badnets"],
        trigger=backdoor_zoo["trigger-badnets"], out=out / "run", repaired=out / "repaired",
        device="cpu", quiet=True, settings=FAST))
    return result, out, before


def test_badnets_backdoor_is_exposed_with_its_target_label(badnets_run):
    result, out, _ = badnets_run
    findings = {f.probe: f for f in result.findings}
    exposure = findings["backdoor.exposure"]
    assert result.exit_code == 1
    assert exposure.status == "fail" and exposure.severity == "critical", exposure.summary
    assert exposure.details["target_label"] == 0
    assert exposure.details["target_share"] > 0.3 and exposure.details["repeat_agreement"] == 1
    assert exposure.details["stopped_early"]
    assert len(exposure.details["class_shares"]) == 10
    assert (out / "run" / "artifacts" / "clean_unlearning.csv").is_file()


def test_trigger_is_recovered_where_the_true_one_is(badnets_run):
    result, out, _ = badnets_run
    recovery = next(f for f in result.findings if f.probe == "backdoor.trigger_recovery")
    assert recovery.status == "fail" and "0" in recovery.details["flagged_labels"]
    assert recovery.details["recovered_mask_mass_on_true_trigger"] > 0.5
    for name in ("recovered_trigger.png", "true_trigger.png"):
        assert (out / "run" / "artifacts" / name).is_file()
    assert "recovered_trigger.png" in (out / "run" / "report.html").read_text()


def test_removal_lowers_attack_success_and_keeps_accuracy(badnets_run):
    """With the trigger recovered on the exposed model, unlearning it removes the backdoor."""
    result, out, before = badnets_run
    removal = next(f for f in result.findings if f.probe == "backdoor.removal")
    assert removal.details["method"] == "trigger-unlearning"
    rows = {r["measure"].split(" (")[0]: r for r in
            removal.details["tables"]["Before and after removal"]}
    assert rows["attack success rate"]["before"] > 0.9
    assert rows["attack success rate"]["after"] < 0.2
    assert rows["robust accuracy"]["after"] > rows["robust accuracy"]["before"]
    assert rows["clean accuracy"]["before"] - rows["clean accuracy"]["after"] < 0.05
    assert removal.status == "pass" and removal.details["der"] > 0.9
    repaired = load_target(out / "repaired")
    assert repaired.kind == "image-classifier"
    after = repaired.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_rnp_removal_stays_within_the_accuracy_bound(backdoor_zoo):
    """RNP prunes lowest masks first and stops before clean accuracy drops by more than the
    bound (on this small ResNet that bound also stops it before the backdoor goes)."""
    from defenses.ebyd import accuracy, reconstructive_neuron_pruning
    from redteam.core.vision import label_ids, load_image_folder

    target = load_target(backdoor_zoo["badnets"])
    clean = load_image_folder(backdoor_zoo["clean-data"], target.model.size,
                              label_ids(target.model.hf_model.config))
    result = reconstructive_neuron_pruning(target.model, clean.images, clean.labels,
                                           max_accuracy_drop=0.05)
    drop = (accuracy(target.model, clean.images, clean.labels)
            - accuracy(result.model, clean.images, clean.labels))
    assert drop <= 0.05 + 1e-6


def test_the_audited_model_is_untouched(badnets_run, backdoor_zoo):
    _, _, before = badnets_run
    now = load_target(backdoor_zoo["badnets"]).model.state_dict()
    assert all(torch.equal(before[k], now[k]) for k in before)


def test_clean_model_is_not_flagged(backdoor_zoo, tmp_path):
    result = run_audit(AuditRequest(
        model=backdoor_zoo["clean"], suite="backdoor", data=backdoor_zoo["clean-data"],
        probes=["backdoor.exposure"], out=tmp_path / "run", device="cpu", quiet=True))
    (exposure,) = result.findings
    # a clean model may collapse under gradient ascent too, but not onto one consistent label,
    # and (trained on the same digits as the backdoored ones) not far enough to pass the VAR bound
    assert exposure.status == "pass" and exposure.severity == "info", exposure.summary
    assert exposure.metric.value < exposure.metric.threshold
    assert exposure.details["repeat_agreement"] < 1
    assert result.exit_code == 0


def test_removal_is_a_step_of_expose_not_a_probe(tmp_path):
    """Repairing writes a model: it runs only under `expose --remove`, after the probes, and
    its settings are checked at that boundary."""
    from redteam.commands.expose import BackdoorRepair
    from redteam.probes import REGISTRY

    assert "backdoor.removal" not in REGISTRY
    assert BackdoorRepair.after == ("backdoor.exposure", "backdoor.trigger_recovery",
                                    "backdoor.trigger_words")
    with pytest.raises(ValueError, match="method = 'magic': expected one of"):
        BackdoorRepair(tmp_path / "repaired", settings={"method": "magic"})


def _run(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def test_expose_bad_inputs_exit_2_and_write_nothing(backdoor_zoo, tiny_lm, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run(["expose", str(tiny_lm), "--clean-data", str(backdoor_zoo["clean-data"]),
                      "--out", str(out)], capsys)
    assert code == 2 and "needs an image or text classifier" in err and not out.exists()

    broken = tmp_path / "clean"
    shutil.copytree(backdoor_zoo["clean-data"], broken)
    (broken / "4" / "broken.png").write_bytes(b"nope")
    code, err = _run(["expose", str(backdoor_zoo["clean"]), "--clean-data", str(broken),
                      "--out", str(out)], capsys)
    assert code == 2 and "broken.png: unreadable image" in err and not out.exists()
    assert len(err.strip().splitlines()) == 1

    inside = backdoor_zoo["clean"] / "repaired"
    code, err = _run(["expose", str(backdoor_zoo["clean"]), "--clean-data",
                      str(backdoor_zoo["clean-data"]), "--remove", str(inside)], capsys)
    assert code == 2 and "must not be inside the model" in err and not inside.exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    save_png(torch.zeros(3, 4, 4), taken / "x.png")
    code, err = _run(["expose", str(backdoor_zoo["clean"]), "--clean-data",
                      str(backdoor_zoo["clean-data"]), "--remove", str(taken)], capsys)
    assert code == 2 and "not empty" in err


def test_findings_document_is_plain_json(badnets_run):
    result, _, _ = badnets_run
    document = json.loads((result.out_dir / "findings.json").read_text())
    assert document["run"]["suite"] == "backdoor"
    assert document["run"]["inputs"]["data"]  # every clean image hashed


def _exposure(zoo, tmp_path, name: str, **settings):
    result = run_audit(AuditRequest(
        model=zoo["badnets"], suite="backdoor", data=zoo["clean-data"],
        probes=["backdoor.exposure"], out=tmp_path / name, device="cpu", quiet=True,
        settings={"backdoor.exposure": {"repeats": 2, **settings}}))
    return result.findings[0]


def test_every_exposure_setting_acts(backdoor_zoo, tmp_path):
    """Each declared setting of backdoor.exposure changes the finding: the VAR threshold its
    verdict, the repeats and the unlearning settings the run itself (min_agreement is tested
    on the clean model below)."""
    base = _exposure(backdoor_zoo, tmp_path, "base")
    assert (base.status, base.severity) == ("fail", "critical"), base.summary
    changed = _exposure(backdoor_zoo, tmp_path, "var", var_threshold=0.5)
    assert changed.status == "inconclusive", changed.summary
    three = _exposure(backdoor_zoo, tmp_path, "repeats", repeats=3)
    assert len(three.details["repeat_collapse_labels"].split(", ")) == 3
    for setting in ({"max_epochs": 1}, {"stop_accuracy": 0.95}, {"lr": 1e-5},
                    {"batch_size": 8}):
        changed = _exposure(backdoor_zoo, tmp_path, next(iter(setting)), **setting)
        assert changed.details["curves"] != base.details["curves"], setting
