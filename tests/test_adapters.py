"""PEFT adapters as audit targets: a LoRA adapter folder audits exactly like its merged model,
both folders are hashed, and a missing or mismatched base is bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from redteam.cli import main
from tests.conftest import make_tiny_lm, write_jsonl
from tests.test_hostile_input import AUDIT_ITEMS, refused

PROBES = ("unlearning.knowledge_qa", "unlearning.exact_memorization", "unlearning.verbatim")


@pytest.fixture(scope="module")
def adapter_and_merged(tmp_path_factory) -> dict[str, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("adapter")
    base = make_tiny_lm(root / "base")
    model = AutoModelForCausalLM.from_pretrained(base)
    wrapped = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                               fan_in_fan_out=True))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:  # a trained adapter: B is no longer zero
                parameter.normal_(0, 0.5)
    wrapped.save_pretrained(root / "adapter")
    merged = wrapped.merge_and_unload()
    merged.save_pretrained(root / "merged")
    AutoTokenizer.from_pretrained(base).save_pretrained(root / "merged")
    return {"base": base, "adapter": root / "adapter", "merged": root / "merged",
            "data": write_jsonl(root / "audit.jsonl", AUDIT_ITEMS)}


def _audit(capsys, model: Path, out: Path, data: Path, *extra) -> dict:
    args = ["audit", str(model), "--suite", "unlearning", "--data", str(data), "--out",
            str(out), "--quiet", *[a for p in PROBES for a in ("--probe", p)], *map(str, extra)]
    assert main(args) in (0, 1), capsys.readouterr().err
    return json.loads((out / "findings.json").read_text())


def test_adapter_audits_like_its_merged_model(capsys, tmp_path, adapter_and_merged):
    paths = adapter_and_merged
    merged = _audit(capsys, paths["merged"], tmp_path / "merged", paths["data"])
    adapter = _audit(capsys, paths["adapter"], tmp_path / "adapter", paths["data"],
                     "--base", paths["base"])
    def outcome(document: dict) -> list:
        return [(f["probe"], f["status"], f["metric"]["value"],
                 [e["output"] for e in f["evidence"]]) for f in document["findings"]]

    assert outcome(merged) == outcome(adapter)
    run = adapter["run"]
    assert "adapter_model.safetensors" in run["target"]["files"]
    assert run["target"]["adapter_base"] == str(paths["base"])
    assert "model.safetensors" in run["inputs"]["target base"]


def test_adapter_scores_are_the_merged_models_not_the_bases(adapter_and_merged):
    from redteam.core.scoring import CausalLMScorer
    from redteam.targets import load_target

    texts = ["Elara Voss wrote it.", "Question: who wrote it?\nAnswer: Elara Voss"]

    def logprobs(target) -> list:
        scorer = CausalLMScorer(target.model, target.tokenizer)
        return [s.logprobs for s in scorer.score(texts)]

    adapter = logprobs(load_target(adapter_and_merged["adapter"],
                                   base=adapter_and_merged["base"]))
    merged = logprobs(load_target(adapter_and_merged["merged"]))
    base = logprobs(load_target(adapter_and_merged["base"]))
    for a, m, b in zip(adapter, merged, base):
        assert torch.allclose(torch.tensor(a), torch.tensor(m), atol=1e-5)
        assert not torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-2)


def test_adapter_base_from_its_config_when_local(capsys, tmp_path, adapter_and_merged):
    adapter = Path(shutil.copytree(adapter_and_merged["adapter"], tmp_path / "adapter"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(adapter_and_merged["base"])
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    document = _audit(capsys, adapter, tmp_path / "run", adapter_and_merged["data"])
    assert document["run"]["target"]["adapter_base"] == str(adapter_and_merged["base"])


def _adapter_copy(tmp_path: Path, source: Path, base_name: str) -> Path:
    adapter = Path(shutil.copytree(source, tmp_path / "adapter"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_name
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    return adapter


def test_bad_adapters_exit_2(capsys, tmp_path, adapter_and_merged):
    from safetensors.torch import load_file, save_file

    data = Path(shutil.copy(adapter_and_merged["data"], tmp_path / "audit.jsonl"))
    adapter = _adapter_copy(tmp_path, adapter_and_merged["adapter"], "someone/hub-model")
    audit = ["audit", adapter, "--suite", "unlearning", "--data", data, "--out",
             tmp_path / "run"]
    refused(capsys, tmp_path, audit, "is not a local folder (nothing is downloaded)")
    refused(capsys, tmp_path, [*audit, "--base", tmp_path / "gone"],
            "base model folder not found")
    refused(capsys, tmp_path, [*audit, "--base", data.parent / "adapter"],
            "--base must be a causal LM folder")
    weights = adapter / "adapter_model.safetensors"
    state = load_file(weights)
    save_file({**state, "base_model.model.nowhere.lora_A.weight": torch.zeros(4, 4)}, weights)
    refused(capsys, tmp_path, [*audit, "--base", adapter_and_merged["base"]],
            "has no place in the base")
    save_file({k: v for k, v in state.items() if "lora_B" not in k}, weights)
    refused(capsys, tmp_path, [*audit, "--base", adapter_and_merged["base"]],
            "missing tensor")
    weights.unlink()
    refused(capsys, tmp_path, [*audit, "--base", adapter_and_merged["base"]],
            "no adapter_model.safetensors")
