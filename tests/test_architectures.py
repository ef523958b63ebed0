"""The LLM path on the architectures reviewers are handed: Llama, Qwen2, Mistral, Gemma 2, Phi-3,
GPT-NeoX, OPT and GPT-2, each a random-init tiny model saved as sharded bf16 safetensors with a
fast tokenizer and a chat template."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from redteam.scoring import CausalLMScorer
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
