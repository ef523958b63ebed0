"""Unlearning methods on the zoo's trained LM: boundary checks, effects, saved directories."""

from __future__ import annotations

import json

import pytest
import torch

from defenses.unlearning import METHODS, training_texts, unlearn, unlearn_directory
from defenses.unlearning.losses import encode_batch, mean_nll
from redteam.zoo.build import UNLEARNED
from redteam.zoo.lm import load_lm


@pytest.fixture(scope="module")
def items(unlearning_zoo):
    return [json.loads(line) for line in unlearning_zoo["audit"].read_text().splitlines()]


def _split_texts(items, split):
    return training_texts([item for item in items if item["split"] == split])


def _nll(model, tokenizer, texts):
    with torch.no_grad():
        return mean_nll(model, encode_batch(tokenizer, texts, 256)).item()


def test_registry_names_the_methods():
    assert set(METHODS) == {"ga", "graddiff", "npo", "simnpo", "salun-graddiff", "salun-npo"}


def test_unknown_method_and_empty_forget_set_are_rejected(unlearning_zoo):
    model, tokenizer = load_lm(unlearning_zoo["original"])
    with pytest.raises(ValueError, match="ga, graddiff, npo"):
        unlearn(model, tokenizer, ["Question: q\nAnswer: a"], None, "rmu", epochs=1, lr=1e-3,
                batch_size=2)
    with pytest.raises(ValueError, match="empty"):
        unlearn(model, tokenizer, [], None, "npo", epochs=1, lr=1e-3, batch_size=2)


def test_training_texts_from_audit_items(items):
    forget = [item for item in items if item["split"] == "forget"]
    texts = training_texts(forget)
    questions = [item for item in forget if "question" in item]
    assert texts[0] == f"Question: {questions[0]['question']}\nAnswer: {questions[0]['answer']}"
    assert texts[1] == questions[0]["text"]
    assert len(texts) == len(set(texts)) == len(questions) * 2 + (len(forget) - len(questions))
    assert not set(texts) & set(_split_texts(items, "retain"))


# SimNPO's push fades once a forget text's mean token NLL is well above 1/beta (its loss
# saturates): at the shared settings it raises the forget NLL less than the others (demo zoo:
# 0.34 -> 1.25, NPO: -> 4.4).
MIN_FORGET_RISE = {"simnpo": 0.5}


@pytest.mark.parametrize("method", UNLEARNED)
def test_zoo_variants_raised_forget_loss_more_than_retain_loss(unlearning_zoo, items, method):
    original, tokenizer = load_lm(unlearning_zoo["original"])
    unlearned, _ = load_lm(unlearning_zoo[method])
    forget, retain = _split_texts(items, "forget"), _split_texts(items, "retain")
    forget_rise = _nll(unlearned, tokenizer, forget) - _nll(original, tokenizer, forget)
    retain_rise = _nll(unlearned, tokenizer, retain) - _nll(original, tokenizer, retain)
    assert forget_rise > MIN_FORGET_RISE.get(method, 1.0)
    assert forget_rise > retain_rise


def test_methods_with_a_retain_term_keep_retain_loss_lower_than_ga(unlearning_zoo, items):
    retain = _split_texts(items, "retain")
    losses = {}
    for method in UNLEARNED:
        model, tokenizer = load_lm(unlearning_zoo[method])
        losses[method] = _nll(model, tokenizer, retain)
    assert all(losses[method] < losses["ga"] for method in UNLEARNED if method != "ga"), losses


def test_salun_variant_changed_only_its_salient_half_of_the_weights(unlearning_zoo):
    original, _ = load_lm(unlearning_zoo["original"])
    unlearned, _ = load_lm(unlearning_zoo["salun-npo"])
    before = dict(original.named_parameters())
    changed = total = 0
    for name, p in unlearned.named_parameters():
        changed += int((p != before[name]).sum())
        total += p.numel()
    assert 0.4 * total < changed <= round(0.5 * total)


def test_unlearning_is_deterministic_under_a_seed(unlearning_zoo, items):
    forget, retain = _split_texts(items, "forget")[:8], _split_texts(items, "retain")[:8]
    runs = []
    for _ in range(2):
        model, tokenizer = load_lm(unlearning_zoo["original"])
        model = unlearn(model, tokenizer, forget, retain, "npo", epochs=1, lr=1e-3,
                        batch_size=4, seed=3, quiet=True)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_unlearn_directory_saves_a_loadable_model(unlearning_zoo, items, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = load_lm(unlearning_zoo["original"])
    out = unlearn_directory(model, tokenizer, items, "graddiff", tmp_path / "unlearned",
                            epochs=1, lr=1e-3, batch_size=8, quiet=True)
    record = json.loads((out / "unlearning.json").read_text())
    assert record["method"] == "graddiff" and record["epochs"] == 1
    assert record["retain_weight"] == 1.0 and "beta" not in record  # what graddiff ran with
    assert record["forget_texts"] == len(_split_texts(items, "forget"))
    assert (out / "model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(out, local_files_only=True, use_safetensors=True)
    AutoTokenizer.from_pretrained(out, local_files_only=True)
