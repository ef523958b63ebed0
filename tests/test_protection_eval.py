"""redteam evaluate-protection: protected digits do not teach the task; a plain copy does."""

from __future__ import annotations

import json
import shutil

import pytest

from redteam.cli import main
from redteam.commands.evaluate_protection import (
    ProtectionEvaluationRequest,
    evaluate_protection,
    parse_groups,
)
from redteam.commands.protect import protect_folder
from redteam.core.errors import InputError


@pytest.fixture(scope="module")
def protected_digits(protection_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("uc") / "protected"
    manifest = protect_folder(protection_zoo["publish"], out,
                              surrogate=protection_zoo["surrogate"], epochs=20, quiet=True)
    return out, manifest


def test_protected_digits_do_not_teach_a_different_architecture(protection_zoo,
                                                                protected_digits, tmp_path):
    protected, manifest = protected_digits
    assert manifest["surrogate"]["model_type"] == "resnet"
    assert manifest["summary"]["all_within_epsilon"]
    result = evaluate_protection(ProtectionEvaluationRequest(
        clean_dir=protection_zoo["publish"], protected_dir=protected,
        test_dir=protection_zoo["test"], out=tmp_path / "run", epochs=10, quiet=True))
    findings = {f.probe: f for f in result.findings}
    for probe in ("protection.unlearnability", "protection.label_agnostic"):
        baselines = findings[probe].metric.baselines
        assert findings[probe].status == "pass", findings[probe].summary
        assert baselines["trained on clean"] > 0.8
        assert baselines["trained on clean"] - baselines["trained on protected"] > 0.3
    assert findings["protection.perturbation_budget"].status == "pass"
    assert findings["protection.perturbation_budget"].metric.value <= 8.0
    for probe in ("protection.augmented_training", "protection.jpeg_reencoding"):
        assert set(findings[probe].metric.baselines) == {"trained on clean",
                                                         "trained on protected", "chance"}
    # Crop and flip do not remove a cluster-wise shortcut: the protected digits still teach
    # almost nothing above chance.
    augmented = findings["protection.augmented_training"]
    assert augmented.status == "pass" and augmented.severity == "info", augmented.summary
    assert augmented.metric.value < 0.25
    # JPEG at quality 75 squeezes out much of an 8/255 perturbation (Image Shortcut Squeezing,
    # arXiv:2301.13838): most of what the clean digits teach comes back.
    jpeg = findings["protection.jpeg_reencoding"]
    assert jpeg.status == "fail", jpeg.summary
    assert jpeg.metric.value > jpeg.metric.threshold == 0.5
    assert result.exit_code == 1
    settings = {row["setting"]: row["value"] for row in
                findings["protection.unlearnability"].details["tables"]["Settings"]}
    assert settings["learner"] == "convnext"  # another architecture than the surrogate
    document = json.loads((tmp_path / "run" / "findings.json").read_text())
    assert document["run"]["suite"] == "protection"
    assert document["run"]["exit_code"] == result.exit_code
    html = (tmp_path / "run" / "report.html").read_text()
    artifacts = findings["protection.perturbation_budget"].artifacts
    assert artifacts and all((tmp_path / "run" / a).is_file() and a in html for a in artifacts)


def test_an_unprotected_copy_fails_the_evaluation(protection_zoo, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(protection_zoo["publish"], copy)
    code = main(["evaluate-protection", str(protection_zoo["publish"]), str(copy),
                 "--test-data", str(protection_zoo["test"]), "--out", str(tmp_path / "run"),
                 "--epochs", "5", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    printed = {line.split()[2].rstrip(":"): line.split()[0] for line in out.splitlines()
               if line.startswith(("fail", "pass", "error"))}
    assert printed == {"protection.unlearnability": "fail", "protection.label_agnostic": "fail",
                       "protection.perturbation_budget": "pass",
                       "protection.augmented_training": "fail",
                       "protection.jpeg_reencoding": "fail"}
    # The copy has the clean pixels, so every learner learns exactly as much from it: all of
    # what the clean folder teaches (1.0), the worst value; the counter-measures are capped at
    # high by their rule, and no pixel moved.
    findings = {f["probe"]: f for f in json.loads(
        (tmp_path / "run" / "findings.json").read_text())["findings"]}
    verdicts = {probe: (f["status"], f["severity"], f["metric"]["value"])
                for probe, f in findings.items()}
    assert verdicts == {"protection.unlearnability": ("fail", "critical", 1.0),
                        "protection.label_agnostic": ("fail", "critical", 1.0),
                        "protection.perturbation_budget": ("pass", "info", 0.0),
                        "protection.augmented_training": ("fail", "high", 1.0),
                        "protection.jpeg_reencoding": ("fail", "high", 1.0)}
    events = [json.loads(line)["event"]
              for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert events[0] == "run_start" and events[-1] == "run_end"  # written by the engine
    assert events.count("probe_end") == 5


def test_runs_sharing_a_cache_train_on_a_clean_folder_once(protection_zoo, protected_digits,
                                                         tmp_path, monkeypatch):
    """Two evaluations of one clean folder in one process (the demo's two protections) train
    the learner on it once per probe, and on a folder with the same pixels not again."""
    import redteam.probes.protection as protection
    from redteam.engine import ModelCache

    trained, train = [], protection.train_and_test
    monkeypatch.setattr(protection, "train_and_test",
                        lambda *args, **kwargs: trained.append(args[1]) or train(*args, **kwargs))
    copy = tmp_path / "copy"
    shutil.copytree(protection_zoo["publish"], copy)
    cache, scores = ModelCache(), []
    for name, folder in (("protected", protected_digits[0]), ("copy", copy)):
        result = evaluate_protection(ProtectionEvaluationRequest(
            clean_dir=protection_zoo["publish"], protected_dir=folder,
            test_dir=protection_zoo["test"], out=tmp_path / f"run-{name}", epochs=1,
            quiet=True), cache=cache)
        scores.append({f.probe: f.details["split_scores"] for f in result.findings
                       if "split_scores" in f.details})
    assert len(trained) == 8  # 4 probes x (clean, protected); the copy's pixels are the clean's
    assert scores[0].keys() == scores[1].keys() and len(scores[0]) == 4
    for probe, split in scores[1].items():
        for labelling, accuracy in split.items():
            assert accuracy["trained on clean"] == scores[0][probe][labelling]["trained on clean"]
            assert accuracy["trained on protected"] == accuracy["trained on clean"]


def test_parse_groups_defaults_to_pairs_and_checks_the_classes():
    classes = [str(i) for i in range(5)]
    assert parse_groups(None, classes) == [["0", "1"], ["2", "3"], ["4"]]
    assert parse_groups("0,1,2;3,4", classes) == [["0", "1", "2"], ["3", "4"]]
    for bad, message in (("0,1;2,3", "exactly one group"), ("0,1,2,3,9;4", "'9' is not a class"),
                         ("0,1,2,3,4", "two groups"), ("0,1,1;2,3,4", "exactly one group")):
        with pytest.raises(InputError, match=message):
            parse_groups(bad, classes)


def test_evaluation_bad_inputs_exit_2(protection_zoo, protected_digits, tmp_path, capsys):
    protected, _ = protected_digits
    partial = tmp_path / "partial"
    shutil.copytree(protected, partial)
    removed = sorted((partial / "3").iterdir())[0]
    removed.unlink()
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(sorted((protected / "3").iterdir())[0], flat / "a.png")
    wrong_test = tmp_path / "wrong-test"
    shutil.copytree(protection_zoo["test"] / "3", wrong_test / "cat")
    publish, test = protection_zoo["publish"], protection_zoo["test"]
    cases = [
        ((publish, partial, "--test-data", test), f"no protected copy of 3/{removed.name}"),
        ((flat, protected, "--test-data", test), "needs at least two class sub-folders"),
        ((publish, protected, "--test-data", wrong_test), "class 'cat' is not one of"),
        ((publish, protected, "--test-data", test, "--groups", "0,1;x"), "'x' is not a class"),
        ((publish, tmp_path / "nowhere", "--test-data", test), "image folder not found"),
        ((publish, protected, "--test-data", test, "--learner", "mlp"), "Invalid value"),
    ]
    for args, message in cases:
        code = main(["evaluate-protection", *map(str, args), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "run").exists()
