"""`--prompt-format auto` and `inconclusive`: the audit asks in the format the
model answers its retain questions in, and never passes a model it could not get an answer from.

The models learnt the same facts in one form only: through a chat template of their own, or as
single plain QA blocks (never few-shot). Asked in the wrong form they answer nothing, forget and
retain alike, which a fixed format would read as "forgotten".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redteam.cli import main
from redteam.core.answers import format_candidates
from redteam.core.prompts import PromptFormat
from tests.conftest import make_tiny_causal_lm, write_jsonl


def audit(tmp_path: Path, capsys, model: Path, data: Path, name: str, *extra) -> dict:
    out = tmp_path / name
    code = main(["audit", str(model), "--suite", "unlearning", "--data", str(data), "--quiet",
                 "--probe", "unlearning.knowledge_qa", "--probe", "unlearning.utility",
                 "--out", str(out), *map(str, extra)])
    capsys.readouterr()
    document = json.loads((out / "findings.json").read_text())
    document["exit_code"] = code
    document["statuses"] = {f["probe"]: f["status"] for f in document["findings"]}
    document["report"] = (out / "report.html").read_text()
    return document


def test_a_chat_trained_model_is_judged_through_its_chat_template(format_zoo, tmp_path, capsys):
    zoo = format_zoo["chat"]
    original = audit(tmp_path, capsys, zoo["original"], zoo["audit"], "original",
                     "--retrain", zoo["retrain"])
    assert original["statuses"]["unlearning.knowledge_qa"] == "fail"
    assert original["exit_code"] == 1
    record = original["run"]["prompt_format"]
    assert record["name"].startswith("chat")
    assert record["example"].startswith("<|user|>\n")
    scores = {c["name"]: c["retain_score"] for c in record["calibration"]["candidates"]}
    assert scores[record["name"]] > 0.8 > 0.2 > scores["plain, 3-shot"]
    assert "Prompt formats tried" in original["report"]
    assert "chat, 0-shot (used)" in original["report"]

    retrain = audit(tmp_path, capsys, zoo["retrain"], zoo["audit"], "retrain")
    assert retrain["statuses"]["unlearning.knowledge_qa"] == "pass"
    assert retrain["run"]["prompt_format"]["name"].startswith("chat")


def test_the_plain_form_cannot_pass_a_chat_model(format_zoo, tmp_path, capsys):
    zoo = format_zoo["chat"]
    for name in ("original", "retrain"):
        plain = audit(tmp_path, capsys, zoo[name], zoo["audit"], f"plain-{name}",
                      "--prompt-format", "plain")
        finding = next(f for f in plain["findings"] if f["probe"] == "unlearning.knowledge_qa")
        assert finding["status"] == "inconclusive", finding["summary"]
        assert "answers almost none of" in finding["summary"]
        assert plain["run"]["prompt_format"]["calibration"]["measurable"] is False
        assert "could not decide (inconclusive)" in plain["report"]
    assert plain["statuses"]["unlearning.utility"] == "fail"  # it answers no retain question


def test_a_zero_shot_model_is_asked_zero_shot(format_zoo, tmp_path, capsys):
    zoo = format_zoo["zero-shot"]
    original = audit(tmp_path, capsys, zoo["original"], zoo["audit"], "original",
                     "--retrain", zoo["retrain"])
    assert original["run"]["prompt_format"]["name"] == "plain, 0-shot"
    assert original["statuses"]["unlearning.knowledge_qa"] == "fail"
    retrain = audit(tmp_path, capsys, zoo["retrain"], zoo["audit"], "retrain")
    assert retrain["run"]["prompt_format"]["name"] == "plain, 0-shot"
    assert retrain["statuses"]["unlearning.knowledge_qa"] == "pass"


def test_an_unmeasurable_reference_makes_utility_inconclusive(format_zoo, tmp_path, capsys):
    zoo = format_zoo["chat"]
    run = audit(tmp_path, capsys, zoo["retrain"], zoo["audit"], "run", "--reference",
                zoo["original"], "--prompt-format", "plain")
    assert run["run"]["prompt_format"]["calibration"]["model"] == "reference"
    assert run["statuses"] == {"unlearning.knowledge_qa": "inconclusive",
                               "unlearning.utility": "inconclusive"}
    assert run["exit_code"] == 0  # inconclusive is not a failure, and says so in the report


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from transformers import AutoTokenizer

    chat = AutoTokenizer.from_pretrained(
        make_tiny_causal_lm(tmp_path_factory.mktemp("t") / "m", "qwen2"))
    plain = AutoTokenizer.from_pretrained(
        make_tiny_causal_lm(tmp_path_factory.mktemp("t") / "m", "gpt2"))
    plain.chat_template = None
    return chat, plain


def test_auto_tries_the_chat_template_only_where_there_is_one(tokenizers):
    chat, plain = tokenizers
    auto = PromptFormat("auto", system_prompt="Be brief.")
    names = [f.name for f in format_candidates(auto, chat, 3)]
    assert names == ["chat, 0-shot", "chat, 3-shot", "plain, 3-shot", "plain, 0-shot"]
    assert all(f.system_prompt == "Be brief." for f in format_candidates(auto, chat, 3))
    assert [f.name for f in format_candidates(auto, plain, 3)] == ["plain, 3-shot",
                                                                   "plain, 0-shot"]
    assert [f.name for f in format_candidates(PromptFormat("auto", shots=0), plain, 3)] == [
        "plain, 0-shot"]
    assert format_candidates(PromptFormat("plain"), chat, 3) == [PromptFormat("plain")]


def test_prompt_settings_are_checked_before_any_model_loads(tmp_path, capsys):
    from tests.test_hostile_input import AUDIT_ITEMS, refused

    model = make_tiny_causal_lm(tmp_path / "m", "gpt2")
    data = write_jsonl(tmp_path / "audit.jsonl", AUDIT_ITEMS)
    config = tmp_path / "audit.toml"
    config.write_text("[prompt]\nmin_retain_score = 1.5\n")
    refused(capsys, tmp_path, ["audit", model, "--suite", "unlearning", "--data", data,
                               "--config", config, "--out", tmp_path / "run"],
            "min_retain_score")


def test_unlearn_trains_in_the_format_the_model_is_audited_in(format_zoo, tmp_path, capsys):
    zoo = format_zoo["chat"]
    forget_recall = {}
    for spec in ("auto", "plain"):
        out = tmp_path / f"unlearned-{spec}"
        assert main(["unlearn", str(zoo["original"]), "--method", "graddiff", "--data",
                     str(zoo["audit"]), "--out", str(out), "--prompt-format", spec,
                     "--epochs", "5", "--lr", "3e-4", "--quiet"]) == 0
        record = json.loads((out / "unlearning.json").read_text())
        assert record["prompt_format"] == {"auto": "chat, 0-shot", "plain": "plain, 0-shot"}[spec]
        run = audit(tmp_path, capsys, out, zoo["audit"], f"audit-{spec}", "--reference",
                    zoo["original"])
        assert run["run"]["prompt_format"]["name"] == "chat, 0-shot"
        knowledge = next(f for f in run["findings"] if f["probe"] == "unlearning.knowledge_qa")
        forget_recall[spec] = knowledge["metric"]["value"]
    # The same budget spent in the plain form leaves what the model answers through its
    # template (nearly) untouched (0.50 vs 1.00 when this test was written).
    assert forget_recall["auto"] <= forget_recall["plain"] - 0.25, forget_recall
