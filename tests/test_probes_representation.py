"""The representation-level probes: linear probes on hidden states and MLP value vectors.

The test zoo is too small for the linear probe to tell ``original`` from ``retrain`` reliably
(2 forget authors; no template's retain answers repeat enough to pass the default filters, and
with relaxed filters only 6 forget answers are decodable). So its verdict logic is tested on
synthetic hidden states (a model whose states encode the forget answers vs one whose do not), the
probe fitting on separable vs random features, and the real pipeline end to end on the zoo for a
well-formed finding. ``parametric_traces`` is tested on the zoo's real weights.
"""

from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from redteam.core.data import load_audit_jsonl
from redteam.engine import AuditRequest, run_audit
from redteam.probes import linear_probe, suites
from redteam.probes.base import LanguageModelResources, ProbeContext
from redteam.probes.linear_probe import LinearProbe, fit_probe, last_token_states
from redteam.probes.parametric_traces import ParametricTraces, top_aligned, value_vectors
from redteam.targets import Target, load_target
from redteam.zoo.authors import audit_items, make_world, write_audit_jsonl

ROW_KEYS = {"line", "subject", "input", "expected", "leak"}


def context(probe, **models) -> ProbeContext:
    """A causal LM probe's context: its settings, the comparison ``models`` given."""
    return ProbeContext(config=probe.config, lm=LanguageModelResources(), **models)


def test_registered_in_the_unlearning_suite():
    names = suites()["unlearning"]
    assert names.index("unlearning.linear_probe") < names.index("unlearning.utility")
    assert names.index("unlearning.parametric_traces") < names.index("unlearning.utility")


# ------------------------------------------------------------------------ hidden states
def test_last_token_states_do_not_depend_on_padding(tiny_lm):
    target = load_target(tiny_lm)
    prompts = ["Question: who?\nAnswer:", "Question: who wrote it, and where?\nAnswer:", "A"]
    batched = last_token_states(target.model, target.tokenizer, prompts, batch_size=3)
    alone = np.concatenate([last_token_states(target.model, target.tokenizer, [p])
                            for p in prompts])
    assert batched.shape == (3, 3, 32)  # prompts, embeddings + 2 blocks, hidden
    np.testing.assert_allclose(batched, alone, atol=1e-5)


# ------------------------------------------------------------------------ linear probe
def test_fit_probe_separates_separable_features_only():
    rng = np.random.default_rng(0)
    labels = [c for c in "abc" for _ in range(12)]
    centres = {c: rng.normal(0, 3, 16) for c in "abc"}
    separable = np.stack([centres[c] + rng.normal(0, 0.5, 16) for c in labels])
    model, cv = fit_probe(separable, labels, [0.1, 1.0], folds=4, seed=0)
    assert cv > 0.9
    fresh = np.stack([centres[c] + rng.normal(0, 0.5, 16) for c in "abc"])
    assert list(model.predict(fresh)) == ["a", "b", "c"]
    _, cv_random = fit_probe(rng.normal(0, 1, (36, 16)), labels, [0.1, 1.0], folds=4, seed=0)
    assert cv_random < 0.6  # chance is 1/3


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """The demo-size world's audit items (no model needed): 36 retain authors per template."""
    path = tmp_path_factory.mktemp("demo-data") / "audit.jsonl"
    return load_audit_jsonl(write_audit_jsonl(audit_items(make_world("demo", seed=0)), path))


def _fake_states(data):
    """Hidden states of fake models: 'leaky' encodes every trained answer, 'clean' only retain."""
    split = {item.question: item for item in data.items if item.question}

    def states(model, tokenizer, prompts, batch_size=16):
        rng = np.random.default_rng(len(prompts))
        out = rng.normal(0, 1, (len(prompts), 3, 32))
        for row, prompt in enumerate(prompts):
            item = split[prompt.removeprefix("Question: ").removesuffix("\nAnswer:")]
            known = item.split == "retain" or (item.split == "forget" and model == "leaky")
            if known:
                code = np.random.default_rng(zlib.crc32(item.answer.encode())).normal(0, 3, 32)
                out[row, 1:] += code  # layers 1 and 2 carry the answer
        return out.astype(np.float32)

    return states


def _fake(name: str) -> Target:
    return Target(path=Path(name), kind="causal-lm", model=name)


FAST = {"c_grid": [0.1, 1.0], "folds": 3}  # fewer fits; the synthetic states are easy


def test_linear_probe_fails_when_forget_answers_are_decodable(demo_data, monkeypatch):
    monkeypatch.setattr(linear_probe, "last_token_states", _fake_states(demo_data))
    probe = LinearProbe(FAST)
    ctx = context(probe, reference=_fake("leaky"), retrain=_fake("clean"))
    (leak,) = probe.run(_fake("leaky"), demo_data, ctx)
    (clean,) = probe.run(_fake("clean"), demo_data, ctx)
    assert leak.status == "fail" and leak.severity == "high", leak.summary
    assert leak.metric.value > 0.8 and leak.metric.baselines["retrain"] < 0.35
    assert leak.metric.threshold == pytest.approx(leak.metric.baselines["retrain"] + 0.2)
    assert leak.metric.ci95[0] <= leak.metric.value <= leak.metric.ci95[1]
    assert leak.details["best_layer"] in (1, 2) and leak.evidence
    assert clean.status == "pass", clean.summary
    rows = leak.details["per_item"]
    assert rows and all(ROW_KEYS <= set(row) for row in rows)
    assert {row["leak"] for row in rows} <= {0.0, 1.0}
    series = leak.details["curves"]["series"]
    assert {"target forget", "reference forget", "retrain forget", "chance"} <= set(series)
    assert all(len(xs) == len(ys) == 3 for xs, ys in series.values())
    # only the categorical templates are probed; year and book titles barely repeat
    assert len(leak.details["templates"]) == 4


def test_linear_probe_fits_the_same_in_worker_processes(demo_data, monkeypatch):
    """The (template, layer) probes are fitted in as many processes as torch has threads; what
    they decode must not depend on how many that is."""
    from redteam.core.training import fixed_threads

    monkeypatch.setattr(linear_probe, "last_token_states", _fake_states(demo_data))
    probe = LinearProbe(FAST)
    templates, _ = linear_probe.categorical_templates(demo_data, 8, 20, 2.0)
    fmt = context(probe).lm.prompt_format
    records = {}
    for threads in (1, 2):
        with fixed_threads(threads):
            records[threads] = linear_probe.probe_model(_fake("leaky"), templates,
                                                        probe.config, 0, fmt).to_record()
    assert records[1] == records[2]
    assert np.mean(records[2]["forget_correct"][1]) > 0.8  # the leaky layers decode


def test_linear_probe_without_retrain_uses_the_holdout_floor(demo_data, monkeypatch):
    monkeypatch.setattr(linear_probe, "last_token_states", _fake_states(demo_data))
    probe = LinearProbe(FAST)
    (leak,) = probe.run(_fake("leaky"), demo_data, context(probe))
    assert leak.status == "fail" and "no --retrain" in leak.summary
    (clean,) = probe.run(_fake("clean"), demo_data, context(probe))
    assert clean.status == "pass", clean.summary


def test_linear_probe_skips_without_categorical_templates(tmp_path):
    data = load_audit_jsonl(write_audit_jsonl(audit_items(make_world("test", seed=0)),
                                              tmp_path / "audit.jsonl"))
    probe = LinearProbe()
    (finding,) = probe.run(_fake("unused"), data, context(probe))
    assert finding.status == "skipped" and "barely repeat" in finding.summary


def test_linear_probe_end_to_end_on_the_zoo(unlearning_zoo, tmp_path):
    """The zoo cannot tell original from retrain here (see the module docstring), so the audited
    model is the retrained one, whose answer is known: it is its own gold standard, so it leaks
    nothing beyond it and passes, whatever the probe decodes."""
    config = tmp_path / "audit.toml"
    config.write_text('[probes."unlearning.linear_probe"]\nmin_items_per_class = 1.0\n')
    result = run_audit(AuditRequest(
        model=unlearning_zoo["retrain"], suite="unlearning", data=unlearning_zoo["audit"],
        probes=["unlearning.linear_probe"], reference=unlearning_zoo["original"],
        retrain=unlearning_zoo["retrain"], config=config, out=tmp_path / "run", device="cpu",
        quiet=True))
    (finding,) = result.findings
    assert finding.status == "pass" and finding.severity == "info", finding.summary
    metric = finding.metric
    # its best layer's forget accuracy is at most its own best forget accuracy, the floor
    assert 0 <= metric.value <= metric.baselines["retrain"] < metric.threshold
    assert metric.threshold == pytest.approx(metric.baselines["retrain"] + 0.2, abs=1e-4)
    assert metric.baselines["reference"] >= metric.value  # the original knew the forget answers
    assert all(ROW_KEYS <= set(row) for row in finding.details["per_item"])
    document = json.loads((tmp_path / "run" / "findings.json").read_text())
    assert document["findings"][0]["details"]["curves"]["x_label"].startswith("layer")
    assert "decoded by a linear probe" in (tmp_path / "run" / "report.html").read_text()


# ------------------------------------------------------------------------ parametric traces
@pytest.fixture(scope="module")
def zoo_models(unlearning_zoo):
    return (load_target(unlearning_zoo["original"]),
            load_audit_jsonl(unlearning_zoo["audit"]))


def test_parametric_traces_model_against_itself(zoo_models):
    original, data = zoo_models
    probe = ParametricTraces()
    (finding,) = probe.run(original, data, context(probe, reference=original))
    assert finding.status == "fail" and finding.severity == "medium", finding.summary
    assert finding.metric.value == pytest.approx(1.0)
    rows = finding.details["per_item"]
    assert len(rows) == 10
    assert all(r["cosine"] == pytest.approx(1.0) and r["jaccard"] == 1.0 for r in rows)
    assert {"layer", "index", "l2", "top_tokens_before", "top_tokens_after"} <= set(rows[0])
    assert finding.details["control_vectors"]


def test_parametric_traces_detect_randomised_forget_vectors(zoo_models):
    original, data = zoo_models
    probe = ParametricTraces()
    forget_ids, _ = probe._token_sets(original.tokenizer, data)
    emb = original.model.get_output_embeddings().weight.detach()
    picked = top_aligned(value_vectors(original.model), emb, forget_ids, 10)
    model = copy.deepcopy(original.model)
    vectors = dict(value_vectors(model))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer, index, _ in picked:
            old = vectors[layer][index]
            fresh = torch.randn(old.shape, generator=generator)
            old.copy_(fresh * old.norm() / fresh.norm())  # same length, new direction
    edited = Target(path=Path("edited"), kind="causal-lm", model=model,
                    tokenizer=original.tokenizer)
    (finding,) = probe.run(edited, data, context(probe, reference=original))
    assert finding.status == "pass", finding.summary
    assert finding.metric.value < 0.3
    assert finding.details["forget_moved_more_than_control"] is True
    control = finding.details["split_scores"]["control (retain-aligned)"]
    assert control["jaccard"] == pytest.approx(1.0) and "moved more than" in finding.summary


def test_parametric_traces_needs_a_reference(tiny_lm):
    target = load_target(tiny_lm)
    probe = ParametricTraces()
    (finding,) = probe.run(target, None, context(probe))
    assert finding.status == "skipped" and "--reference" in finding.summary


class _Unknown(torch.nn.Module):
    """A causal-LM-like module whose MLPs have names the probe does not know."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 8)) for _ in range(2))
        self.head = torch.nn.Linear(8, 20, bias=False)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head


def test_parametric_traces_skip_unknown_architectures(demo_data):
    model = Target(path=Path("unknown"), kind="causal-lm", model=_Unknown())
    probe = ParametricTraces()
    (finding,) = probe.run(model, demo_data, context(probe, reference=model))
    assert finding.status == "skipped"
    assert "unsupported architecture" in finding.summary and "_Unknown" in finding.summary


def _tiny(kind: str):
    import transformers as tf

    common = {"vocab_size": 40}
    configs = {
        "gpt2": (tf.GPT2Config(n_embd=8, n_layer=2, n_head=2, n_inner=24, **common),
                 tf.GPT2LMHeadModel, lambda m, i: m.transformer.h[i].mlp.c_proj.weight),
        "llama": (tf.LlamaConfig(hidden_size=8, intermediate_size=24, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, **common),
                  tf.LlamaForCausalLM, lambda m, i: m.model.layers[i].mlp.down_proj.weight.T),
        "gpt_neox": (tf.GPTNeoXConfig(hidden_size=8, intermediate_size=24, num_hidden_layers=2,
                                      num_attention_heads=2, **common), tf.GPTNeoXForCausalLM,
                     lambda m, i: m.gpt_neox.layers[i].mlp.dense_4h_to_h.weight.T),
        "opt": (tf.OPTConfig(hidden_size=8, ffn_dim=24, num_hidden_layers=2,
                             num_attention_heads=2, word_embed_proj_dim=8, **common),
                tf.OPTForCausalLM, lambda m, i: m.model.decoder.layers[i].fc2.weight.T),
    }
    config, cls, expected = configs[kind]
    return cls(config), expected


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gpt_neox", "opt"])
def test_value_vectors_of_known_architectures(kind):
    model, expected = _tiny(kind)
    vectors = value_vectors(model)
    assert [layer for layer, _ in vectors] == [0, 1]
    for layer, matrix in vectors:
        assert matrix.shape == (24, 8)
        assert torch.equal(matrix, expected(model, layer).detach())
