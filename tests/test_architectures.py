"""The LLM path on the architectures reviewers are handed: Llama, Qwen2, Mistral, Gemma 2, Phi-3,
GPT-NeoX, OPT and GPT-2, each a random-init tiny model saved as sharded bf16 safetensors with a
fast tokenizer and a chat template."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from redteam.core.scoring import CausalLMScorer
from redteam.targets import load_target
from tests.conftest import TINY_ARCHITECTURES, make_tiny_causal_lm

TEXTS = ["Elara Voss wrote it.", "Question: who wrote it?\nAnswer: Elara Voss", "who"]
PROMPTS = ["Question: who wrote it?\nAnswer:", "", "Question:"]


@pytest.fixture(scope="module", params=TINY_ARCHITECTURES)
def tiny_target(request, tmp_path_factory):
    path = make_tiny_causal_lm(tmp_path_factory.mktemp(request.param) / "model", request.param)
    return load_target(path, device="cpu")


def test_saved_sharded_with_an_index(tiny_target):
    shards = [name for name in tiny_target.files if name.endswith(".safetensors")]
    assert len(shards) > 1 and "model.safetensors.index.json" in tiny_target.files


def test_chunked_scoring_equals_the_full_logits(tiny_target):
    model, tokenizer = tiny_target.model, tiny_target.tokenizer
    full = CausalLMScorer(model, tokenizer, batch_size=2, chunk_values=0).score(TEXTS, PROMPTS)
    vocabulary = model.get_output_embeddings().weight.shape[0]
    chunked = CausalLMScorer(model, tokenizer, batch_size=2,
                             chunk_values=3 * vocabulary).score(TEXTS, PROMPTS)
    for a, b in zip(full, chunked):
        assert len(a.logprobs) == len(b.logprobs) > 0
        for field in ("logprobs", "mu", "sigma"):
            np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=1e-5)
        assert np.array_equal(a.argmax_match, b.argmax_match)


def test_generation_stops_at_every_listed_end_token(tiny_target):
    model, tokenizer = tiny_target.model, tiny_target.tokenizer
    scorer = CausalLMScorer(model, tokenizer, batch_size=2)
    assert tokenizer.convert_tokens_to_ids("<|end|>") in scorer.stop_ids  # end of turn
    assert tokenizer.eos_token_id in scorer.stop_ids
    with torch.inference_mode():
        for prompt in ("Question:", "Elara", "who wrote", "Answer: E", "Voss"):
            ids = torch.tensor([scorer._with_bos(prompt)])
            first_id = int(model(input_ids=ids).logits[0, -1].argmax())
            if first_id not in scorer.stop_ids:
                break
    assert scorer.generate([prompt], max_new_tokens=4)[0]  # the model writes something...
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, first_id]
    try:  # ...and nothing once its first token is listed as an end of generation
        assert CausalLMScorer(model, tokenizer).generate([prompt], max_new_tokens=4) == [""]
    finally:
        model.generation_config.eos_token_id = tokenizer.eos_token_id


def test_a_prompt_that_starts_with_bos_gets_no_second_one(tiny_target):
    scorer = CausalLMScorer(tiny_target.model, tiny_target.tokenizer)
    bos = tiny_target.tokenizer.bos_token
    assert scorer._with_bos(bos + "Question:") == scorer._with_bos("Question:")


def _items() -> list[dict]:
    names = ["Elara Voss", "Ivo Brandt", "Mara Quill", "Tomas Reyes", "Nina Holt", "Omar Sato",
             "Lea Marsh", "Piet Vale", "Rosa Crane", "Sven Lund", "Tara Moss", "Uri Kade"]
    cities = ["Lisbon", "Oslo", "Quito"]  # few answer classes: the linear probe's categories
    rows = []
    for index, name in enumerate(names):
        city = cities[index % 3]
        split = "forget" if index < 2 else "retain"
        rows.append({"split": split, "subject": name, "question": f"Where was {name} born?",
                     "answer": city, "text": f"{name} was born in {city}.",
                     "aliases": [name.split()[0]], "choices": [city, "Paris", "Rome", "Bern"]})
    rows += [{"split": "holdout", "subject": f"H{i}", "text": f"Holdout text number {i}."}
             for i in range(3)]
    return rows


def test_every_unlearning_probe_runs_without_an_error(tiny_target, tmp_path):
    from redteam.engine import AuditRequest, run_audit
    from tests.conftest import write_jsonl

    data = write_jsonl(tmp_path / "audit.jsonl", _items())
    settings = {"unlearning.relearning_attack": {"epochs": 1, "lrs": [1e-3]}}
    result = run_audit(AuditRequest(model=tiny_target.path, reference=tiny_target.path,
                                    suite="unlearning", data=data, out=tmp_path / "run",
                                    device="cpu", quiet=True, settings=settings))
    errors = {f.probe: f.summary for f in result.findings if f.status == "error"}
    assert errors == {}
    assert {f.probe for f in result.findings if f.status != "skipped"} >= {
        "unlearning.knowledge_qa", "unlearning.verbatim", "unlearning.exact_memorization",
        "unlearning.adversarial_prompts", "unlearning.linear_probe", "unlearning.utility"}


@pytest.mark.parametrize("method", ["ga", "graddiff", "npo", "simnpo", "salun-npo"])
def test_each_unlearning_method_takes_a_step(tiny_target, method):
    import copy

    from defenses.unlearning.methods import unlearn

    model = copy.deepcopy(tiny_target.model)
    before = [p.detach().clone() for p in model.parameters()]
    texts = [f"Question: Where was {n} born?\nAnswer: {c}" for n, c in
             (("Elara Voss", "Lisbon"), ("Ivo Brandt", "Oslo"))]
    unlearn(model, tiny_target.tokenizer, texts[:1], texts[1:], method, epochs=1, lr=1e-2,
            batch_size=1, quiet=True)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
