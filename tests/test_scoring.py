"""Greedy generation: the scorer's own decoding loop against Hugging Face's ``generate``."""

import pytest
import torch

from redteam.core.prompts import ANSWER_STOPS, cut_answer
from redteam.core.scoring import CausalLMScorer
from redteam.targets import load_target

PROMPTS = ["Question: who wrote it?\nAnswer:", "Question: who", "Answer: Elara Voss wrote",
           "Q", "Question: who wrote it?\nAnswer: Elara Voss\n\nQuestion: who wrote it?"]


def _reference(target, prompt: str, max_new_tokens: int) -> str:
    """One prompt at a time through ``model.generate`` (no padding involved)."""
    ids = [target.tokenizer.bos_token_id] + target.tokenizer(prompt)["input_ids"]
    with torch.inference_mode():
        out = target.model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=0)
    return target.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_generation_matches_hugging_face_greedy(tiny_lm, batch_size):
    target = load_target(tiny_lm, device="cpu")
    scorer = CausalLMScorer(target.model, target.tokenizer, batch_size=batch_size)
    outputs = scorer.generate(PROMPTS, max_new_tokens=12)
    assert outputs == [_reference(target, p, 12) for p in PROMPTS]


def test_stop_strings_end_rows_early_without_changing_the_answer(unlearning_zoo):
    target = load_target(unlearning_zoo["original"], device="cpu")
    prompts = [f"Question: {q}\nAnswer:" for q in (
        "Where was nobody born?", "What genre does nobody write?", "Who?")]
    stopped = CausalLMScorer(target.model, target.tokenizer, 4).generate(
        prompts, max_new_tokens=24, stop=ANSWER_STOPS)
    full = [_reference(target, p, 24) for p in prompts]
    assert [cut_answer(s) for s in stopped] == [cut_answer(f) for f in full]
    assert sum(len(s) for s in stopped) <= sum(len(f) for f in full)
