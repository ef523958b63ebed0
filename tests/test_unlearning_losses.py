"""The unlearning losses and loop, on the tiny random LM (fast, no zoo needed)."""

import math

import pytest
import torch

from defenses.unlearning import training_texts, unlearn
from defenses.unlearning.losses import encode_batch, mean_nll, sequence_logprob
from defenses.unlearning.methods import npo_loss
from redteam.targets import load_target

FORGET = ["Question: Who wrote it?\nAnswer: Elara Voss", "Elara Voss wrote it in Lisbon."]
RETAIN = ["Question: Where?\nAnswer: Oslo"]


def test_npo_loss_at_the_reference_is_two_over_beta_log_two(tiny_lm):
    target = load_target(tiny_lm)
    batch = encode_batch(target.tokenizer, FORGET, 64)
    loss = npo_loss(target.model, target.model, batch, None, {"beta": 0.1, "retain_weight": 1})
    assert loss.item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-5)


def test_sequence_logprob_ignores_padding(tiny_lm):
    target = load_target(tiny_lm)
    alone = sequence_logprob(target.model, encode_batch(target.tokenizer, FORGET[:1], 64))
    padded = sequence_logprob(target.model, encode_batch(target.tokenizer, FORGET, 64))
    assert padded[0].item() == pytest.approx(alone[0].item(), abs=1e-4)


@pytest.mark.parametrize("method", ["ga", "graddiff", "npo"])
def test_each_method_lowers_forget_likelihood(tiny_lm, method):
    target = load_target(tiny_lm)
    batch = encode_batch(target.tokenizer, FORGET, 64)
    with torch.no_grad():
        before = mean_nll(target.model, batch).item()
    model = unlearn(target.model, target.tokenizer, FORGET, RETAIN, method, epochs=3, lr=1e-2,
                    quiet=True)
    with torch.no_grad():
        after = mean_nll(model, batch).item()
    assert after > before + 0.1
    assert not model.training


def test_bad_arguments_and_training_texts():
    with pytest.raises(ValueError, match="known: ga, graddiff, npo"):
        unlearn(None, None, FORGET, None, "rmu")
    with pytest.raises(ValueError, match="empty"):
        unlearn(None, None, [], None, "ga")
    with pytest.raises(ValueError, match="graddiff needs retain texts"):
        unlearn(None, None, FORGET, [], "graddiff")
    items = [{"question": "q", "answer": "a", "text": "t"}, {"text": "t"}]
    assert training_texts(items) == ["Question: q\nAnswer: a", "t"]
