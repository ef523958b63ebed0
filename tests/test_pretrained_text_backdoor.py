"""Trigger recovery on classifiers fine-tuned from a real pretrained encoder (all-MiniLM-L6-v2):
a planted rare word is found at the top and fails the model, a sentence trigger never passes,
clean controls get nothing high or critical, and the verdict rule follows its settings."""

import json

import pytest

from redteam.engine import AuditRequest, run_audit
from redteam.zoo.pretrained_text_backdoor import MODELS

# A lighter search than the defaults (the same steps; fewer proposals and texts) keeps the six
# scans within a few minutes on 2 cores.
LIGHT = {"on_exposed": False, "candidates": 50, "screen_texts": 8, "verify": 12,
         "max_texts": 32, "control_words": 8, "phrase_words": 3}
SCANNED = ("clean-s0", "clean-s1", "rare-word-s0", "sentence-s0")


@pytest.fixture(scope="module")
def scans(pretrained_text_backdoor_zoo, tmp_path_factory):
    """The trigger-word finding of every model but rare-word-s1 (the end-to-end expose's)."""
    zoo, found = pretrained_text_backdoor_zoo, {}
    for name in SCANNED:
        trigger = MODELS["test"][name][0] or "cf"
        result = run_audit(AuditRequest(
            model=zoo[name], suite="backdoor", probes=["backdoor.trigger_words"],
            data=zoo["clean-data"], out=tmp_path_factory.mktemp(name) / "run", device="cpu",
            quiet=True, settings={"backdoor.trigger_words": {**LIGHT, "true_trigger": trigger}}))
        found[name] = next(f for f in result.findings if f.probe == "backdoor.trigger_words")
    return found


def test_every_planted_trigger_works_and_clean_accuracy_is_kept(pretrained_text_backdoor_zoo):
    record = json.loads(pretrained_text_backdoor_zoo["zoo.json"].read_text())["models"]
    for name, (trigger, _) in MODELS["test"].items():
        assert record[name]["clean_accuracy"] >= 0.95, name
        if trigger:
            assert record[name]["attack_success"] >= 0.9, name
        else:  # the rare word does nothing to a clean model
            assert record[name]["attack_success"] <= 0.1, name


def test_a_planted_rare_word_fails_the_model_at_the_top_of_the_ranking(scans):
    finding = scans["rare-word-s0"]
    assert finding.status == "fail" and finding.severity == "critical", finding.summary
    assert finding.details["target_name"] == "sports"
    assert finding.details["true_trigger_rank"] <= 3
    assert finding.details["true_trigger_flip_rate"] >= 0.9
    assert finding.metric.value >= 0.9


def test_a_sentence_trigger_never_passes(scans):
    finding = scans["sentence-s0"]
    assert finding.status in ("fail", "inconclusive"), finding.summary
    assert finding.details["target_name"] == "sports"
    planted = set(MODELS["test"]["sentence-s0"][0].split())
    best = finding.details["tables"]["Best suspect per label against its reference"]
    sports = next(row for row in best if row["label"] == "sports")
    assert planted & set(sports["best_suspect"].split()), sports


@pytest.mark.parametrize("name", ["clean-s0", "clean-s1"])
def test_clean_controls_get_nothing_high_or_critical(scans, name):
    finding = scans[name]
    assert finding.severity not in ("high", "critical"), finding.summary
    assert finding.metric.value < 0.5
    assert finding.details["true_trigger_rank"] == "not found"


def test_expose_finds_removes_and_keeps_the_model(pretrained_text_backdoor_zoo, tmp_path):
    from redteam.commands.expose import ExposeRequest, expose_model
    from redteam.core.fileio import hash_tree

    zoo = pretrained_text_backdoor_zoo
    before = hash_tree(zoo["rare-word-s1"])
    result = expose_model(ExposeRequest(
        model=zoo["rare-word-s1"], clean_data=zoo["clean-data"], test_data=zoo["test-data"],
        poisoned_data=zoo["poisoned-rare-word-s1"], out=tmp_path / "run",
        repaired=tmp_path / "repaired", device="cpu", quiet=True, trigger="cf",
        settings={"backdoor.exposure": {"repeats": 2},
                  "backdoor.trigger_words": {**LIGHT, "on_exposed": True}}))
    findings = {f.probe: f for f in result.findings}
    words = findings["backdoor.trigger_words"]
    assert words.severity == "critical" and words.details["true_trigger_rank"] <= 3
    assert result.exit_code == 1
    removal = findings["backdoor.removal"]
    rows = {r["measure"].split(" (")[0]: r
            for r in removal.details["tables"]["Before and after removal"]}
    assert rows["attack success rate"]["after"] <= 0.2 < rows["attack success rate"]["before"]
    assert rows["clean accuracy"]["before"] - rows["clean accuracy"]["after"] <= 0.05
    assert hash_tree(zoo["rare-word-s1"]) == before
