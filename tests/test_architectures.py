"""The LLM path on the architectures reviewers are handed: Llama, Qwen2, Mistral, Gemma 2, Phi-3,
GPT-NeoX, OPT and GPT-2, each a random-init tiny model saved as sharded bf16 safetensors with a
fast tokenizer and a chat template."""

from __future__ import annotations

import numpy as np
import pytest

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
