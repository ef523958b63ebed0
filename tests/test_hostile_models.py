"""Hostile input, round two: broken models never get a verdict, hostile files never hang, and
what a library prints never reaches the user as more than our one line.

Each case goes through ``refused`` (in-process) or ``refused_in_subprocess`` (a real
``python -m redteam``) of tests/test_hostile_input.py: exit code 2, one stderr line naming the
problem, no traceback, nothing created, changed or removed in the test's folder.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import CHAT_TEMPLATE, make_tiny_pipeline, write_jsonl
from tests.test_hostile_input import AUDIT_ITEMS, refused, refused_in_subprocess


def _copy(source: Path, root: Path, name: str) -> Path:
    return Path(shutil.copytree(source, root / name))


def _poison_weights(folder: Path, value: float = math.nan, only: str | None = None) -> None:
    """Set every tensor (or the first whose name contains ``only``) of the folder's
    safetensors file to ``value``."""
    file = next(folder.glob("*.safetensors"))
    tensors = load_file(file)
    for name in sorted(tensors):
        if not tensors[name].is_floating_point():
            continue
        if only is None or only in name:
            tensors[name] = torch.full_like(tensors[name], value)
            if only is not None:
                break
    save_file(tensors, file, metadata={"format": "pt"})


def _edit_json(file: Path, edit) -> None:
    data = json.loads(file.read_text())
    edit(data)
    file.write_text(json.dumps(data))


@pytest.fixture
def lm(tmp_path, tiny_lm) -> dict[str, Path]:
    return {"M": _copy(tiny_lm, tmp_path, "M"),
            "J": write_jsonl(tmp_path / "audit.jsonl", AUDIT_ITEMS), "root": tmp_path}


# --- A. broken models are refused before any verdict ------------------------------------------

def test_nan_lm_is_refused_in_a_real_process(lm):
    _poison_weights(lm["M"])
    refused_in_subprocess(lm["root"], ["audit", lm["M"], "--suite", "unlearning", "--data",
                                       lm["J"], "--out", lm["root"] / "run"],
                          "weights are not finite")


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_one_non_finite_tensor_is_enough(capsys, lm, value):
    _poison_weights(lm["M"], value, only="h.1.mlp.c_fc.weight")
    line = refused(capsys, lm["root"], ["audit", lm["M"], "--suite", "unlearning", "--data",
                                        lm["J"], "--out", lm["root"] / "run"],
                   "weights are not finite")
    assert "h.1.mlp.c_fc.weight" in line


def test_nan_image_classifier_gets_no_backdoor_verdict(capsys, tmp_path, backdoor_zoo):
    model = _copy(backdoor_zoo["badnets"], tmp_path, "I")
    _poison_weights(model)
    refused(capsys, tmp_path, ["expose", model, "--clean-data", backdoor_zoo["clean-data"],
                               "--out", tmp_path / "run"], "weights are not finite")


def test_nan_text_classifier_and_relabelled_config(capsys, tmp_path, text_backdoor_zoo):
    nan = _copy(text_backdoor_zoo["poisoned"], tmp_path, "nan")
    _poison_weights(nan)
    data = text_backdoor_zoo["clean-data"]
    refused(capsys, tmp_path, ["audit", nan, "--suite", "backdoor", "--data", data, "--out",
                               tmp_path / "run"], "weights are not finite")
    shifted = _copy(text_backdoor_zoo["poisoned"], tmp_path, "shifted")
    _edit_json(shifted / "config.json", lambda c: c.update(
        label2id={name: index + 10 for name, index in c["label2id"].items()}))
    refused(capsys, tmp_path, ["audit", shifted, "--suite", "backdoor", "--data", data, "--out",
                               tmp_path / "run"], "label2id")
    twice = _copy(text_backdoor_zoo["poisoned"], tmp_path, "twice")
    _edit_json(twice / "config.json", lambda c: c.update(
        id2label={k: "sports" for k in c["id2label"]}))
    refused(capsys, tmp_path, ["audit", twice, "--suite", "backdoor", "--data", data, "--out",
                               tmp_path / "run"], "given to several ids")


def test_guard_labels_are_checked(capsys, tmp_path, text_backdoor_zoo):
    from defenses.guard import GUARD_FILE, LABELS

    guard = _copy(text_backdoor_zoo["clean"], tmp_path, "guard")
    (guard / GUARD_FILE).write_text(json.dumps({"labels": dict(enumerate(LABELS))}))
    refused(capsys, tmp_path, ["guard", "check", guard, "hello"], 'no "flag" label')
    _edit_json(guard / "config.json", lambda c: c.update(
        label2id={**c["label2id"], "flag": 99}))
    refused(capsys, tmp_path, ["guard", "check", guard, "hello"], "label2id")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "pipeline")


@pytest.mark.parametrize("how", ["nan unet", "nan beta_start", "bogus timestep_spacing"])
def test_broken_diffusion_pipelines_are_refused(capsys, tmp_path, pipeline, tiny_judge, how):
    folder = _copy(pipeline, tmp_path, "P")
    if how == "nan unet":
        _poison_weights(folder / "unet", only="conv_in.weight")
        message = "weights are not finite"
    else:
        config = folder / "scheduler" / "scheduler_config.json"
        text = json.loads(config.read_text())
        if how == "nan beta_start":
            text["beta_start"] = "@nan@"
        else:
            text["timestep_spacing"] = "bogus"
        config.write_text(json.dumps(text).replace('"@nan@"', "NaN"))  # JSON as Python writes it
        message = "scheduler config"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a cat\n")
    refused(capsys, tmp_path, ["audit", folder, "--suite", "concept", "--prompts", prompts,
                               "--judge", tiny_judge, "--concept-label", "3", "--probe",
                               "concept.seed_search", "--out", tmp_path / "run"], message)


def test_a_verdict_on_a_nan_figure_is_an_error():
    from redteam.core.findings import Metric
    from redteam.engine import refuse_non_finite_verdict
    from redteam.probes import REGISTRY

    probe = REGISTRY["unlearning.knowledge_qa"]()
    for metric in (Metric("forget recall", math.nan, 0.2),
                   Metric("forget recall", 0.1, 0.2, baselines={"retrain": math.inf})):
        passed = probe.finding("pass", "info", "looks fine", metric=metric)
        judged = refuse_non_finite_verdict(probe, passed)
        assert judged.status == "error" and "no verdict" in judged.summary
    fine = probe.finding("pass", "info", "fine", metric=Metric("forget recall", 0.1, 0.2))
    assert refuse_non_finite_verdict(probe, fine) is fine


# --- training never writes a NaN model --------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--method", "npo", "--lr", "inf"], "--lr"),
    (["--method", "npo", "--beta", "nan"], "--beta"),
    (["--method", "simnpo", "--delta", "nan"], "--delta"),
    (["--method", "ga", "--lr", "1e30", "--epochs", "2"], "training diverged at step"),
])
def test_unlearning_never_writes_non_finite_weights(capsys, lm, args, message):
    refused(capsys, lm["root"], ["unlearn", lm["M"], "--data", lm["J"], "--out",
                                 lm["root"] / "u", "--quiet", *args], message)


@pytest.mark.parametrize("flag, value", [("--lr", "inf"), ("--weight-decay", "-1"),
                                         ("--val-fraction", "nan"), ("--curvature", "inf")])
def test_hysac_train_refuses_bad_numbers(capsys, tmp_path, visu_zoo, flag, value):
    refused(capsys, tmp_path, ["hysac", "train", visu_zoo["test"], "--base", visu_zoo["clip"],
                               "--out", tmp_path / "h", flag, value], flag)


def test_erase_refuses_an_infinite_eta(capsys, tmp_path, pipeline):
    refused(capsys, tmp_path, ["erase", pipeline, "--concept", "cat", "--out", tmp_path / "e",
                               "--eta", "inf"], "--eta")


# --- B. hostile files are bounded -------------------------------------------------------------

TEMPLATES = {
    "nested loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                     "{% endfor %}{{ question }}", "rendering budget"),
    "division by zero": ("{{ 1/0 }}", "ZeroDivisionError"),
    "a 10 GB string": ("{{ 'a' * 10**10 }}", "rendering budget"),
    "a range past the sandbox's": ("{% for i in range(10**9) %}x{% endfor %}", "Range too big"),
}


@pytest.mark.parametrize("case", sorted(TEMPLATES))
def test_prompt_templates_render_within_budget(capsys, monkeypatch, lm, case):
    from redteam.core import templates

    monkeypatch.setattr(templates, "RENDER_SECONDS", 1.0)
    source, message = TEMPLATES[case]
    template = lm["root"] / "format.jinja"
    template.write_text(source)
    refused(capsys, lm["root"], ["audit", lm["M"], "--suite", "unlearning", "--data", lm["J"],
                                 "--prompt-format", template, "--probe",
                                 "unlearning.knowledge_qa", "--out", lm["root"] / "run"],
            message)


def test_a_hostile_chat_template_is_bounded(capsys, monkeypatch, lm):
    from redteam.core import templates

    monkeypatch.setattr(templates, "RENDER_SECONDS", 1.0)
    _edit_json(lm["M"] / "tokenizer_config.json", lambda c: c.update(
        chat_template="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                      "{% endfor %}" + CHAT_TEMPLATE))
    refused(capsys, lm["root"], ["audit", lm["M"], "--suite", "unlearning", "--data", lm["J"],
                                 "--prompt-format", "chat", "--probe", "unlearning.knowledge_qa",
                                 "--out", lm["root"] / "run"], "chat template: refused")


def test_a_panicking_tokenizer_is_one_line_in_a_real_process(lm):
    _edit_json(lm["M"] / "tokenizer.json", lambda t: t.update(pre_tokenizer={
        "type": "Split", "pattern": {"Regex": "(\\w+\\s?)*$"}, "behavior": "Isolated",
        "invert": False}))
    refused_in_subprocess(lm["root"], ["audit", lm["M"], "--suite", "unlearning", "--data",
                                       lm["J"], "--out", lm["root"] / "run"],
                          "tokenizer could not be loaded", env={"RUST_BACKTRACE": "1"})


def test_a_backtracking_adapter_pattern_is_stopped(capsys, monkeypatch, tmp_path, tiny_lm):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from redteam import targets

    wrapped = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_lm),
                             LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    adapter = tmp_path / "adapter"
    wrapped.save_pretrained(adapter)
    _edit_json(adapter / "adapter_config.json", lambda c: c.update(
        target_modules="(([\\w.]+)+)+X", base_model_name_or_path=str(tiny_lm)))
    monkeypatch.setattr(targets, "ADAPTER_SECONDS", 1)
    data = write_jsonl(tmp_path / "audit.jsonl", AUDIT_ITEMS)
    refused(capsys, tmp_path, ["audit", adapter, "--base", tiny_lm, "--suite", "unlearning",
                               "--data", data, "--out", tmp_path / "run"], "target_modules")


def test_a_header_of_too_many_tensors_is_refused(capsys, lm):
    from redteam.core.weights import MAX_SAFETENSORS_TENSORS

    file = lm["M"] / "model.safetensors"
    tensors = load_file(file)
    tensors.update({f"empty.{i}": torch.zeros(0) for i in range(MAX_SAFETENSORS_TENSORS)})
    save_file(tensors, file, metadata={"format": "pt"})
    refused(capsys, lm["root"], ["audit", lm["M"], "--suite", "unlearning", "--data", lm["J"],
                                 "--out", lm["root"] / "run"], "tensors, more than")


# --- C. one line instead of a traceback -------------------------------------------------------

def test_a_vocabulary_larger_than_the_embedding(capsys, lm):
    file = lm["M"] / "model.safetensors"
    tensors = load_file(file)
    tensors["transformer.wte.weight"] = tensors["transformer.wte.weight"][:-20].clone()
    save_file(tensors, file, metadata={"format": "pt"})
    _edit_json(lm["M"] / "config.json", lambda c: c.update(vocab_size=c["vocab_size"] - 20))
    refused(capsys, lm["root"], ["audit", lm["M"], "--suite", "unlearning", "--data", lm["J"],
                                 "--out", lm["root"] / "run"], "embedding only")


@pytest.mark.parametrize("command", ["data validate", "audit"])
def test_a_lone_surrogate_is_refused_at_the_line(capsys, lm, command):
    data = lm["root"] / "surrogate.jsonl"
    data.write_text(json.dumps(AUDIT_ITEMS[1]) + "\n"
                    + json.dumps({**AUDIT_ITEMS[0], "question": "Who wrote \ud800 it?"}) + "\n")
    args = (["data", "validate", data] if command == "data validate"
            else ["audit", lm["M"], "--suite", "unlearning", "--data", data, "--out",
                  lm["root"] / "run"])
    refused(capsys, lm["root"], args, "surrogate.jsonl:2: question: holds a lone surrogate")


@pytest.mark.parametrize("image, message", [
    ("images/\u0000a.png", "NUL"), ("x" * 5000 + ".png", "not a usable file path"),
    ("notes.txt", "unreadable image")])
def test_quadruplet_images_are_checked_at_the_line(capsys, tmp_path, visu_zoo, image, message):
    (tmp_path / "notes.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    rows = [json.loads(line) for line in visu_zoo["test"].read_text().splitlines()]
    images = visu_zoo["test"].parent
    rows = [{**row, "safe_image": str(images / row["safe_image"]),
             "unsafe_image": str(images / row["unsafe_image"])} for row in rows]
    rows[1]["safe_image"] = image
    data = write_jsonl(tmp_path / "quads.jsonl", rows)
    line = refused(capsys, tmp_path, ["hysac", "train", data, "--base", visu_zoo["clip"],
                                      "--out", tmp_path / "h"], "quads.jsonl:2: safe_image: ")
    assert message in line


def test_control_characters_never_reach_the_terminal(capsys, lm):
    data = lm["root"] / "ansi.jsonl"
    data.write_text(json.dumps({**AUDIT_ITEMS[0], "\u001b[2Jcolour": 1}) + "\n")
    line = refused(capsys, lm["root"], ["data", "validate", data], "ansi.jsonl:1")
    assert "\u001b" not in line and "\\x1b" in line
    line = refused(capsys, lm["root"], ["audit", lm["M"], "--suite", "unlearning", "--data",
                                        lm["J"], "--out", lm["M"] / "x\nfake error"],
                   "must not be inside the model")
    assert "\n" not in line and "\\n" in line


# --- F. what libraries print stays off the terminal ---------------------------------------------

def test_extra_tensors_are_one_line_without_library_warnings(lm):
    """Transformers prints "Some weights ... were not used" (one line per thousands of names) to
    stderr before our check refuses the file; only our line may reach the terminal."""
    file = lm["M"] / "model.safetensors"
    tensors = load_file(file)
    tensors.update({f"extra.block{i}.weight": torch.zeros(2) for i in range(500)})
    save_file(tensors, file, metadata={"format": "pt"})
    refused_in_subprocess(lm["root"], ["audit", lm["M"], "--suite", "unlearning", "--data",
                                       lm["J"], "--out", lm["root"] / "run"],
                          "unexpected tensor")


def test_interrupted_commands_advise_resume_only_where_they_have_it(capsys, monkeypatch,
                                                                     tmp_path):
    import redteam.commands.expose
    from redteam.cli import main
    from redteam.core.errors import RunInterrupted

    def interrupted(*args, **kwargs):
        raise RunInterrupted(tmp_path / "run")

    monkeypatch.setattr(redteam.commands.expose, "expose_model", interrupted)
    assert main(["expose", str(tmp_path), "--clean-data", str(tmp_path), "--out",
                 str(tmp_path / "run")]) == 130
    line = capsys.readouterr().err
    assert "--resume" not in line and str(tmp_path / "run") in line


def test_a_full_disk_is_one_line(capsys, monkeypatch, lm):
    """The file system refusing a write (ENOSPC here) is the user's environment: one line,
    exit 2, and the run folder keeps what was written, sealed, so --overwrite may replace it."""
    import errno
    import os

    import redteam.engine
    from redteam.cli import main
    from redteam.core.outputs import MARKER

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(redteam.engine, "atomic_write_json", full)
    out = lm["root"] / "run"
    code = main([str(a) for a in ["audit", lm["M"], "--suite", "unlearning", "--data", lm["J"],
                                  "--probe", "unlearning.knowledge_qa", "--out", out,
                                  "--quiet"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert "findings.json" in err[0]
    assert json.loads((out / MARKER).read_text())["files"] is not None  # sealed
    monkeypatch.undo()  # space again: the folder is ours, so --overwrite replaces it
    capsys.readouterr()
    assert main(["audit", str(lm["M"]), "--suite", "unlearning", "--data", str(lm["J"]),
                 "--probe", "unlearning.knowledge_qa", "--out", str(out), "--overwrite",
                 "--quiet"]) in (0, 1)


def test_a_model_changed_while_loading_is_refused(monkeypatch, lm):
    """The record's SHA-256 are of the files before loading; a file rewritten between the
    hashing and the loading would make the record name another model than the one audited."""
    from redteam import targets
    from redteam.core.errors import InputError

    hashed = targets.hash_tree

    def hash_then_swap(path):
        digests = hashed(path)
        if Path(path) == lm["M"]:  # someone rewrites the weights right after the hashing
            config = lm["M"] / "config.json"
            config.write_text(config.read_text() + " ")
        return digests

    monkeypatch.setattr(targets, "hash_tree", hash_then_swap)
    with pytest.raises(InputError, match="changed while it was hashed and loaded"):
        targets.load_target(lm["M"])
