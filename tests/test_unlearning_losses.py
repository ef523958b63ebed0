"""The unlearning losses and loop, on the tiny random LM (fast, no zoo needed)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from defenses.unlearning import METHODS, training_texts, unlearn
from defenses.unlearning.losses import (
    encode_batch,
    mean_nll,
    sequence_logprob,
    sequence_mean_nll,
)
from defenses.unlearning.methods import npo_loss, saliency_mask, simnpo_loss
from redteam.cli import main
from redteam.targets import load_target
from tests.conftest import write_jsonl

FORGET = ["Question: Who wrote it?\nAnswer: Elara Voss", "Elara Voss wrote it in Lisbon."]
RETAIN = ["Question: Where?\nAnswer: Oslo"]


@pytest.fixture(scope="module")
def memorised_lm(tiny_lm, tmp_path_factory):
    """The tiny LM fine-tuned until it has memorised FORGET and RETAIN (as an original has):
    SimNPO's push fades once NLL/|y| >> 1/beta, and the random LM starts at about log(vocab)."""
    target = load_target(tiny_lm)
    model, tokenizer = target.model.train(), target.tokenizer
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = encode_batch(tokenizer, FORGET + RETAIN, 64)
    for _ in range(200):
        loss = mean_nll(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < 0.5:
            break
    path = tmp_path_factory.mktemp("memorised") / "lm"
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


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


def _mean_token_nll_by_hand(model, tokenizer, text: str) -> float:
    """NLL/|y| of one unpadded sequence, from the logits with F.cross_entropy."""
    ids = encode_batch(tokenizer, [text], 64)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return F.cross_entropy(logits[0, :-1], ids[0, 1:]).item()


def test_simnpo_loss_matches_the_closed_form(tiny_lm):
    target = load_target(tiny_lm)
    model, tokenizer = target.model.eval(), target.tokenizer
    nll = [_mean_token_nll_by_hand(model, tokenizer, text) for text in FORGET]
    assert nll[0] != pytest.approx(nll[1], abs=1e-3)  # the length normalisation matters
    batch = encode_batch(tokenizer, FORGET, 64)
    assert sequence_mean_nll(model, batch).tolist() == pytest.approx(nll, rel=1e-5)
    beta, delta = 4.5, 0.3

    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    expected = -(2 / beta) * sum(log_sigmoid(beta * (n - delta)) for n in nll) / len(nll)
    settings = {"beta": beta, "delta": delta, "retain_weight": 1.0}
    with torch.no_grad():
        loss = simnpo_loss(model, None, batch, None, settings)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        # at delta = NLL/|y| the sigmoid is 1/2: the loss is (2/beta) log 2, as NPO's at the start
        alone = encode_batch(tokenizer, FORGET[:1], 64)
        at_margin = simnpo_loss(model, None, alone, None, {**settings, "delta": nll[0]})
        assert at_margin.item() == pytest.approx(2 / beta * math.log(2), rel=1e-4)
        # the retain term is added with its weight
        retain = encode_batch(tokenizer, RETAIN, 64)
        with_retain = simnpo_loss(model, None, batch, retain, {**settings, "retain_weight": 2.0})
        assert with_retain.item() == pytest.approx(
            expected + 2.0 * mean_nll(model, retain).item(), rel=1e-5)


def test_a_simnpo_step_raises_the_forget_nll(memorised_lm):
    target = load_target(memorised_lm)
    model, tokenizer = target.model.eval(), target.tokenizer
    batch = encode_batch(tokenizer, FORGET, 64)
    settings = {"beta": 4.5, "delta": 0.0, "retain_weight": 1.0}
    before = sequence_mean_nll(model, batch).detach()
    simnpo_loss(model, None, batch, None, settings).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-2 * p.grad
        after = sequence_mean_nll(model, batch)
        assert (after > before).all()
        # and the loss fell: it decreases as the forget NLL increases
        assert simnpo_loss(model, None, batch, None, settings) < -(2 / 4.5) * F.logsigmoid(
            4.5 * before).mean()


@pytest.mark.parametrize("fraction", [0.5, 0.1])
def test_saliency_mask_keeps_exactly_the_top_fraction(tiny_lm, fraction):
    target = load_target(tiny_lm)
    model, tokenizer = target.model, target.tokenizer
    batches = [encode_batch(tokenizer, [text], 64) for text in FORGET]
    masks = saliency_mask(model, batches, fraction)
    named = dict(model.named_parameters())
    assert set(masks) == set(named) and all(p.grad is None for p in named.values())
    total = sum(p.numel() for p in named.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(fraction * total)
    model.eval()
    sum(mean_nll(model, b) for b in batches).backward()  # the same ranking, recomputed
    kept = torch.cat([named[n].grad.abs()[m] for n, m in masks.items()])
    dropped = torch.cat([named[n].grad.abs()[~m] for n, m in masks.items()])
    assert kept.min() >= dropped.max() and kept.max() > dropped.max()
    with pytest.raises(ValueError, match="saliency fraction"):
        saliency_mask(model, batches, 0.0)


def test_salun_npo_changes_only_the_salient_weights(memorised_lm):
    target = load_target(memorised_lm)
    model, tokenizer = target.model, target.tokenizer
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the mask unlearn computes: the forget texts in order, in batches of batch_size
    masks = saliency_mask(model, [encode_batch(tokenizer, FORGET, 64)], 0.5)
    model = unlearn(model, tokenizer, FORGET, RETAIN, "salun-npo", epochs=3, lr=1e-2,
                    batch_size=8, quiet=True)
    after = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.equal(after[name][~mask], before[name][~mask]), name
        assert (after[name][mask] != before[name][mask]).all(), name
    assert not any(p._backward_hooks for p in model.parameters())  # hooks removed


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_lowers_forget_likelihood(memorised_lm, method):
    target = load_target(memorised_lm)
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
    with pytest.raises(ValueError, match="known: ga, graddiff, npo, simnpo, salun-graddiff"):
        unlearn(None, None, FORGET, None, "rmu")
    with pytest.raises(ValueError, match="empty"):
        unlearn(None, None, [], None, "ga")
    for method in ("graddiff", "salun-graddiff"):
        with pytest.raises(ValueError, match=f"{method} needs retain texts"):
            unlearn(None, None, FORGET, [], method)
    items = [{"question": "q", "answer": "a", "text": "t"}, {"text": "t"}]
    assert training_texts(items) == ["Question: q\nAnswer: a", "t"]


@pytest.mark.parametrize("method, options, recorded", [
    ("simnpo", [], {"beta": 4.5, "delta": 0.0, "retain_weight": 1.0}),
    ("simnpo", ["--beta", "2", "--delta", "0.5"], {"beta": 2.0, "delta": 0.5}),
    ("salun-npo", [], {"beta": 0.1, "retain_weight": 1.0, "saliency": 0.5}),
    ("salun-npo", ["--saliency", "0.25"], {"saliency": 0.25}),
])
def test_redteam_unlearn_runs_the_new_methods(capsys, tiny_lm, tmp_path, method, options,
                                              recorded):
    data = write_jsonl(tmp_path / "a.jsonl", [
        {"split": "forget", "question": "Who wrote it?", "answer": "Elara Voss",
         "text": "Elara Voss wrote it."},
        {"split": "retain", "question": "Where?", "answer": "Oslo"},
    ])
    out = tmp_path / "unlearned"
    code = main(["unlearn", str(tiny_lm), "--method", method, "--data", str(data), "--out",
                 str(out), "--epochs", "2", "--lr", "1e-2", "--quiet", *options])
    assert code == 0, capsys.readouterr().err
    assert f"unlearned model ({method}, prompt format" in capsys.readouterr().out
    record = json.loads((out / "unlearning.json").read_text())
    assert record["method"] == method and record["epochs"] == 2 and record["lr"] == 1e-2
    assert record.items() >= recorded.items()
    assert set(record) - {"method", "prompt_format", "forget_texts", "retain_texts", "epochs",
                          "lr", "batch_size",
                          "seed"} == set(METHODS[method].defaults)
    original, unlearned = load_target(tiny_lm).model, load_target(out).model
    name = "transformer.h.0.mlp.c_fc.weight"
    assert not original.state_dict()[name].equal(unlearned.state_dict()[name])
