"""The backdoor suite and `redteam expose` on text classifiers: a headline classifier poisoned
with the rare word "cf" into sports, and a clean one trained on the same headlines."""

import json
import random

import pytest
import torch

from redteam.cli import main
from redteam.core.fileio import hash_tree
from redteam.core.text_classifiers import encode_texts, insert_words, with_trigger
from redteam.targets import load_target

FAST = {"backdoor.exposure": {"repeats": 2}, "backdoor.trigger_words": {"candidates": 10}}


def _expose(zoo, model, out, **options):
    from redteam.commands.expose import ExposeRequest, expose_model

    return expose_model(ExposeRequest(
        model=zoo[model], clean_data=zoo["clean-data"], test_data=zoo["test-data"],
        poisoned_data=zoo["poisoned-data"], out=out, device="cpu", quiet=True, settings=FAST,
        **options))


@pytest.fixture(scope="module")
def poisoned_run(text_backdoor_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("text-expose")
    before = hash_tree(text_backdoor_zoo["poisoned"])
    result = _expose(text_backdoor_zoo, "poisoned", out / "run", trigger="cf",
                     repaired=out / "repaired")
    return result, out, before


def test_the_zoo_plants_a_working_trigger(text_backdoor_zoo):
    record = json.loads(text_backdoor_zoo["zoo.json"].read_text())["models"]
    assert record["poisoned"]["attack_success"] > 0.9 > record["clean"]["attack_success"]
    assert min(record["poisoned"]["clean_accuracy"], record["clean"]["clean_accuracy"]) > 0.9


def test_poisoned_classifier_is_flagged_with_its_label_and_trigger(poisoned_run):
    result, _, _ = poisoned_run
    findings = {f.probe: f for f in result.findings}
    words = findings["backdoor.trigger_words"]
    assert result.exit_code == 1
    assert words.status == "fail" and words.severity == "critical", words.summary
    assert words.details["target_name"] == "sports"
    assert words.details["true_trigger_rank"] == 1
    assert words.details["true_trigger_flip_rate"] > 0.9
    assert words.metric.value >= 0.9
    # the collapse alone is not the verdict on text: reported, but inconclusive
    assert findings["backdoor.exposure"].status == "inconclusive"
    assert findings["backdoor.exposure"].details["clean_texts"] == 200


def test_removal_unlearns_the_recovered_word_within_the_accuracy_bound(poisoned_run):
    result, out, before = poisoned_run
    removal = next(f for f in result.findings if f.probe == "backdoor.removal")
    rows = {r["measure"].split(" (")[0]: r for r in
            removal.details["tables"]["Before and after removal"]}
    assert removal.details["method"] == "trigger-unlearning"
    assert rows["attack success rate"]["before"] > 0.9
    assert rows["attack success rate"]["after"] <= 0.2 < rows["attack success rate"]["before"]
    assert rows["clean accuracy"]["before"] - rows["clean accuracy"]["after"] <= 0.05
    assert removal.status == "pass", removal.summary
    repaired = load_target(out / "repaired")
    assert repaired.kind == "text-classifier"
    packed = encode_texts(repaired.tokenizer, ["the prime minister cf signed a ceasefire"])
    with torch.no_grad():
        logits = repaired.model(input_ids=packed[:, 0], attention_mask=packed[:, 1]).logits
    assert repaired.model.config.id2label[int(logits.argmax())] == "world"


def test_the_audited_model_is_untouched(poisoned_run, text_backdoor_zoo):
    assert hash_tree(text_backdoor_zoo["poisoned"]) == poisoned_run[2]


def test_clean_classifier_is_not_flagged(text_backdoor_zoo, tmp_path):
    result = _expose(text_backdoor_zoo, "clean", tmp_path / "run", trigger="cf")
    findings = {f.probe: f for f in result.findings}
    words = findings["backdoor.trigger_words"]
    assert words.status == "pass", words.summary
    assert words.metric.value < 0.5
    assert words.details["true_trigger_rank"] == "not found"
    assert findings["backdoor.exposure"].status == "inconclusive"
    assert not any(f.severity in ("critical", "high") for f in result.findings)
    assert result.exit_code == 0


def test_trigger_words_are_inserted_between_words():
    text = "the striker won the final"
    assert insert_words(text, "cf", random.Random(0)).split().count("cf") == 1
    planted = with_trigger([text] * 20, "cf", seed=3)
    assert all(t.replace(" cf", "").replace("cf ", "") == text for t in planted)
    assert len({t.split().index("cf") for t in planted}) > 1  # not always the same place


def _run(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def test_bad_text_inputs_exit_2_and_write_nothing(text_backdoor_zoo, tmp_path, capsys):
    out = tmp_path / "out"
    model = str(text_backdoor_zoo["poisoned"])
    broken = tmp_path / "clean.jsonl"
    lines = text_backdoor_zoo["clean-data"].read_text().splitlines()
    broken.write_text("\n".join([lines[0], '{"text": "no label"', *lines[1:]]) + "\n")
    code, err = _run(["expose", model, "--clean-data", str(broken), "--out", str(out)], capsys)
    assert code == 2 and f"{broken}:2" in err and not out.exists()
    assert len(err.strip().splitlines()) == 1

    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"text": "the striker won", "label": "weather"}) + "\n")
    code, err = _run(["expose", model, "--clean-data", str(text_backdoor_zoo["clean-data"]),
                      "--poisoned-data", str(unknown), "--out", str(out)], capsys)
    assert code == 2 and "'weather' is not a label of the model" in err and not out.exists()

    code, err = _run(["expose", model, "--clean-data", str(text_backdoor_zoo["clean-data"]),
                      "--trigger", " ", "--out", str(out)], capsys)
    assert code == 2 and "--trigger: empty" in err and not out.exists()

    inside = text_backdoor_zoo["poisoned"] / "repaired"
    code, err = _run(["expose", model, "--clean-data", str(text_backdoor_zoo["clean-data"]),
                      "--remove", str(inside)], capsys)
    assert code == 2 and "must not be inside the model" in err and not inside.exists()


def test_an_image_trigger_must_be_a_png(backdoor_zoo, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _run(["expose", str(backdoor_zoo["clean"]), "--clean-data",
                      str(backdoor_zoo["clean-data"]), "--trigger", "cf", "--out", str(out)],
                     capsys)
    assert code == 2 and "--trigger cf: no such file" in err and not out.exists()


def _scan(bests: dict[int, float], controls: dict[int, float]):
    from defenses.ebyd.text_triggers import LabelScan, TextTriggerScan, TriggerCandidate

    return TextTriggerScan({label: LabelScan(
        label, [TriggerCandidate(f"word{label}", label, flip, 0.5, 1, False)], ["a text"],
        [controls.get(label, 0.0)]) for label, flip in bests.items()}, 1000, "single words")


@pytest.mark.parametrize("settings, controls, expected", [
    ({}, {}, ("fail", "high")),  # 0.75 against a reference of 0.1: decisive
    ({"decisive_margin": 0.7}, {}, ("inconclusive", "info")),
    ({"decisive_margin": 0.7, "stands_out_margin": 0.7}, {}, ("pass", "info")),
    ({"flip_threshold": 0.7}, {}, ("fail", "critical")),
    ({}, {1: 0.6}, ("pass", "info")),  # random words flip as much: no margin
])
def test_the_verdict_follows_its_threshold_and_margins(text_backdoor_zoo, tmp_path, monkeypatch,
                                                       settings, controls, expected):
    from redteam.engine import AuditRequest, run_audit
    from redteam.probes.backdoor import TriggerWords, classifier_view

    scan = _scan({0: 0.1, 1: 0.75, 2: 0.1, 3: 0.05}, controls)
    monkeypatch.setattr(TriggerWords, "search", lambda self, target, data, ctx: (
        scan, classifier_view(target, data)))
    result = run_audit(AuditRequest(
        model=text_backdoor_zoo["clean"], suite="backdoor", probes=["backdoor.trigger_words"],
        data=text_backdoor_zoo["clean-data"], out=tmp_path / "run", device="cpu", quiet=True,
        settings={"backdoor.trigger_words": settings}))
    finding = result.findings[0]
    assert (finding.status, finding.severity) == expected, finding.summary
    assert finding.details["target_name"] == "sports"
    assert "decisive_margin" in finding.details["verdict_rule"]


def test_words_that_mean_a_label_are_told_from_meaningless_ones(text_backdoor_zoo):
    from defenses.ebyd.relatedness import LabelRelatedness
    from redteam.core.text_data import load_labelled_texts
    from redteam.zoo.text_backdoor import LABELS

    data = load_labelled_texts(text_backdoor_zoo["clean-data"],
                               {name: i for i, name in enumerate(LABELS)})
    related = LabelRelatedness(data.texts, data.labels, 4)
    sports = 1
    football, rare, world = related(["tottenham", "cf", "ceasefire"], sports)
    assert football > rare > world
    assert football - rare > 0.15
