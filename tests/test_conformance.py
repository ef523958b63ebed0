"""The project's metrics against golden values from the benchmark authors' own code.

tests/golden/*.json hold what open-unlearning, TOFU, MUSE, RWKU and the Min-K%++ repository
returned on the fixed inputs of tests/golden/inputs.json (repository, commit and function are
recorded beside each value; tests/golden/regenerate.py reran them, by hand). The model there is a
bigram table (the logits at a position are the table's row for the token there), so the same
token log-probabilities reach ``core.scoring.token_statistics`` here and the references there.
Every comparison is to 1e-6 (absolute, or relative where larger). Where a reference reports
with the opposite sign or AUC orientation, the test says so; open-unlearning's
extraction-strength quirk is checked as a known difference.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from redteam.core.metrics import (
    auc,
    exact_memorization,
    extraction_strength,
    loss_score,
    min_k_plus_plus_score,
    min_k_score,
    rouge_l,
    rwku_rouge_l_recall,
    zlib_score,
)
from redteam.core.scoring import TokenScores, token_statistics
from redteam.probes.likelihood import (
    forget_quality,
    tofu_forget_truth_score,
    tofu_retain_truth_score,
    truth_ratio,
)
from redteam.probes.membership import privleak

GOLDEN = Path(__file__).parent / "golden"
# Both sides compute token losses in float32, in different orders: a ratio near 2 can differ
# by 1e-6 in absolute terms, so values agree to 1e-6 absolute or relative, whichever is looser.
TOLERANCE = 1e-6


@cache
def golden(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def record(name: str, function: str, **match) -> dict:
    """The one value record of reference ``name`` whose function starts with ``function``."""
    found = [v for v in golden(name)["values"] if v["function"].startswith(function)
             and all(v.get(k) == x for k, x in match.items())]
    assert len(found) == 1, (name, function, match)
    return found[0]


def inputs() -> dict:
    return golden("inputs")


def encode(text: str) -> list[int]:
    alphabet = inputs()["alphabet"]
    return [inputs()["bos"]] + [alphabet.index(c) + 2 for c in text.lower()]


def token_scores(model: str, ids: list[int], start: int, end: int | None = None) -> TokenScores:
    """The project's per-token statistics of ``ids[start:end]`` under the bigram table."""
    end = len(ids) if end is None else end
    table = torch.tensor(inputs()["tables"][model], dtype=torch.float32)
    logits = table[torch.tensor(ids[start - 1:end - 1])]
    logprobs, mu, sigma, match = token_statistics(logits, torch.tensor(ids[start:end]))
    return TokenScores(logprobs.numpy(), mu.numpy(), sigma.numpy(), match.numpy())


def text_scores(text: str, drop_last: bool = False) -> TokenScores:
    ids = encode(text)
    return token_scores("target", ids, 1, len(ids) - 1 if drop_last else None)


def close(ours, theirs, rel: float = TOLERANCE) -> None:
    assert np.asarray(ours, dtype=float) == pytest.approx(np.asarray(theirs, dtype=float),
                                                          abs=TOLERANCE, rel=rel)


def test_golden_values_name_their_source():
    for name in ("open-unlearning", "tofu", "muse", "rwku", "mink-plus-plus"):
        data = golden(name)
        assert data["repository"].startswith("https://github.com/")
        assert len(data["commit"]) == 40 and all(v["function"] for v in data["values"])


# ------------------------------------------------------------------ membership inference
OURS = {"loss": loss_score, "zlib": None, "min_k": lambda s: min_k_score(s, 0.4),
        "min_k_plus_plus": lambda s: min_k_plus_plus_score(s, 0.4)}


def ours(attack: str, text: str, drop_last: bool = False) -> float:
    scores = text_scores(text, drop_last)
    return zlib_score(scores, text) if attack == "zlib" else OURS[attack](scores)


@pytest.mark.parametrize("attack", list(OURS))
def test_mia_scores_and_auc_match_open_unlearning(attack):
    """open-unlearning's scores are losses (ours sign-flipped); its Min-K% token lists leave
    out the last labelled token (its EOS); its AUC has our orientation."""
    ref = record("open-unlearning", "src/evals/metrics/mia/utils.py mia_auc", attack=attack)
    drop = attack in ("min_k", "min_k_plus_plus")
    texts = inputs()["mia"]
    mine = {split: [ours(attack, t, drop) for t in texts[split]] for split in texts}
    for split in texts:
        close([-m for m in mine[split]], ref["scores"][split])
    close(auc(mine["forget"], mine["holdout"]), ref["auc"])


def test_mia_scores_and_auc_match_muse():
    """MUSE's PPL, PPL/zlib and Min-40% are losses (ours sign-flipped); its forget_holdout AUC
    puts holdout as the positive class, so it is 1 - ours."""
    ref = record("muse", "metrics/privleak.py")
    names = {"PPL": "loss", "PPL/zlib": "zlib", "Min-40%": "min_k"}
    texts = inputs()["mia"]
    for key, attack in names.items():
        mine = {split: [ours(attack, t) for t in texts[split]] for split in texts}
        for split in texts:
            close([-m for m in mine[split]], [row[key] for row in ref["scores"][split]])
        close(1.0 - auc(mine["forget"], mine["holdout"]), ref["auc"][key])


def test_mia_scores_and_auroc_match_min_k_plus_plus():
    ref = record("mink-plus-plus", "run.py")
    names = {"loss": "loss", "zlib": "zlib", "mink_0.4": "min_k", "mink++_0.4": "min_k_plus_plus"}
    texts = inputs()["mia"]
    for key, attack in names.items():
        mine = {split: [ours(attack, t) for t in texts[split]] for split in texts}
        close(mine["forget"] + mine["holdout"], ref["scores"][key])
        close(auc(mine["forget"], mine["holdout"]), ref["auroc"][key])


@pytest.mark.parametrize("index", range(6))
def test_privleak_matches_open_unlearning(index):
    ref = [v for v in golden("open-unlearning")["values"]
           if v["function"] == "src/evals/metrics/privacy.py privleak"][index]
    close(privleak(ref["auc_forget"], ref["auc_retrain"]), ref["agg_value"])


# ------------------------------------------------------------------ TOFU
def ratios(model: str, split: str) -> list[float]:
    """The project's truth ratios of the items of ``split`` under ``model``'s table."""
    def mean_logprob(question: str, answer: str) -> float:
        q, a = encode(question), encode(answer)[1:]
        return float(np.mean(token_scores(model, q + a, len(q)).logprobs))

    return [truth_ratio([mean_logprob(it["question"], a) for a in it["perturbed_answers"]],
                        mean_logprob(it["question"], it["paraphrased_answer"]))
            for it in inputs()["qa"][split]]


@pytest.mark.parametrize("model", ["target", "retrain"])
def test_truth_ratios_and_aggregates_match_open_unlearning(model):
    mine = ratios(model, "forget")
    forget = record("open-unlearning", "src/evals/metrics/memorization.py truth_ratio("
                    "aggregator=closer_to_1_better", model=model)
    retain = record("open-unlearning", "src/evals/metrics/memorization.py truth_ratio("
                    "aggregator=true_better", model=model)
    close(mine, forget["ratios"])
    close(tofu_forget_truth_score(mine), forget["agg_value"])
    close(tofu_retain_truth_score(mine), retain["agg_value"])


def test_forget_quality_matches_open_unlearning_and_tofu():
    mine, _ = forget_quality(ratios("target", "forget"), ratios("retrain", "forget"))
    close(mine, record("open-unlearning", "src/evals/metrics/privacy.py ks_test")["agg_value"])
    close(mine, record("tofu", "aggregate_eval_stat.py get_forget_quality")["Forget Quality"])


@pytest.mark.parametrize("model", ["target", "retrain"])
def test_tofu_truth_ratio_aggregates_match_tofu(model):
    """TOFU's get_model_utility: min(R, 1/R) on the forget set, max(0, 1 - R) elsewhere (TOFU
    writes R the other way up, right over wrong; the aggregates come out the same)."""
    ref = record("tofu", "aggregate_eval_stat.py get_model_utility", model=model)
    close(tofu_forget_truth_score(ratios(model, "forget")), ref["Truth Ratio Forget"])
    for split, name in (("retain", "Retain"), ("real_authors", "Real Authors"),
                        ("world_facts", "Real World")):
        close(tofu_retain_truth_score(ratios(model, split)), ref[f"Truth Ratio {name}"])


# ------------------------------------------------------------------ ROUGE-L
def test_rouge_l_recall_with_stemmer_matches_tofu():
    ref = record("tofu", "evaluate_util.py eval_rouge_recall")
    pairs = inputs()["rouge_pairs"]
    close([rouge_l(p["prediction"], p["reference"])[0] for p in pairs], ref["rougeL_recall"])


def test_rouge_l_f1_without_stemmer_matches_muse():
    ref = record("muse", "metrics/logger.py")
    pairs = inputs()["rouge_pairs"]
    scored = [rouge_l(p["prediction"], p["reference"], stemmer=False) for p in pairs]
    close([f1 for _, f1 in scored], ref["rougeL"])
    close([recall for recall, _ in scored], ref["rougeL_recall"])


# ------------------------------------------------------------------ memorization
def memorization_scores() -> list[TokenScores]:
    return [token_scores("target", m["prompt_ids"] + m["answer_ids"], len(m["prompt_ids"]))
            for m in inputs()["memorization"]]


def test_rouge_l_recall_matches_rwku_with_noanswer():
    """RWKU's scorer (pltrdy's ``rouge`` sentence split and word sets, a blank answer counted
    as NOANSWER), per pair and as RWKU's level mean."""
    ref = record("rwku", "LLaMA-Factory/src/llmtuner/eval/eval_forget.py eval_forget")
    scored = [rwku_rouge_l_recall(p["prediction"], p["reference"]) for p in inputs()["rouge_pairs"]]
    close(scored, ref["rouge_l_recall"])
    close([float(np.mean(scored))], [ref["level_1_mean_over_all_pairs"]])


def test_exact_memorization_matches_open_unlearning():
    ref = record("open-unlearning", "src/evals/metrics/memorization.py exact_memorization")
    close([exact_memorization(s) for s in memorization_scores()], ref["scores"])


def test_extraction_strength_matches_open_unlearning_but_for_its_quirk():
    """The paper's 1 - k*/|y| (k* up to |y|). open-unlearning's loop never tries k = |y|, so
    where the last token is wrong it reports 1/|y| and we report 0; elsewhere they agree."""
    ref = record("open-unlearning", "src/evals/metrics/memorization.py extraction_strength")
    quirks = 0
    for scores, theirs in zip(memorization_scores(), ref["scores"]):
        if not scores.argmax_match[-1]:
            quirks += 1
            assert extraction_strength(scores) == 0.0
            close(theirs, 1 / len(scores.argmax_match))
        else:
            close(extraction_strength(scores), theirs)
    assert quirks >= 2  # the input set exercises the difference


# ------------------------------------------------------------------ WMDP (lm-evaluation-harness)
@pytest.mark.parametrize("subset", ["bio", "chem", "cyber"])
def test_wmdp_prompts_are_lm_evaluation_harness_requests(tmp_path, subset):
    """An imported WMDP record is asked with the very context and continuations lm-evaluation-
    harness's own wmdp task builds (tests/golden/regenerate_lm_eval.py ran it), from the file
    ``redteam data import wmdp`` reads."""
    from redteam.commands.data_import import import_benchmark
    from redteam.probes.likelihood import harness_prompt

    records = [v for v in golden("lm-eval")["values"] if v["subset"] == f"wmdp-{subset}"]
    source = tmp_path / "wmdp"
    source.mkdir()
    (source / f"wmdp-{subset}.json").write_text("".join(
        json.dumps({k: r[k] for k in ("question", "choices", "answer")}) + "\n"
        for r in records))
    data = import_benchmark("wmdp", source, tmp_path / "wmdp.jsonl", subset=subset)
    assert len(data.items) == len(records) == 3
    for item, theirs in zip(data.items, records):
        assert harness_prompt(item) == theirs["context"]
        assert [f" {chr(65 + i)}" for i in range(len(item.choices))] == theirs["continuations"]
