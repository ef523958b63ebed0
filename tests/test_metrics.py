import numpy as np
import pytest

from redteam.core.metrics import (
    auc,
    bootstrap_ci,
    contains_answer,
    exact_memorization,
    extraction_strength,
    min_k_plus_plus_score,
    min_k_score,
    rouge_l,
)
from redteam.core.scoring import TokenScores
from redteam.probes.membership import privleak


def _scores(logprobs, matches=None, mu=None, sigma=None):
    logprobs = np.asarray(logprobs, dtype=float)
    n = len(logprobs)
    return TokenScores(logprobs=logprobs,
                       mu=np.asarray(mu if mu is not None else np.zeros(n), dtype=float),
                       sigma=np.asarray(sigma if sigma is not None else np.ones(n), dtype=float),
                       argmax_match=np.asarray(matches if matches is not None else [True] * n))


def test_exact_memorization_and_extraction_strength():
    s = _scores([0.0] * 4, matches=[False, True, True, True])
    assert exact_memorization(s) == pytest.approx(0.75)
    assert extraction_strength(s) == pytest.approx(0.75)  # k* = 1 of 4
    s = _scores([0.0] * 4, matches=[True, True, True, False])
    assert extraction_strength(s) == pytest.approx(0.0)
    assert extraction_strength(_scores([0.0] * 2, matches=[True, True])) == 1.0


def test_min_k_uses_lowest_fraction_and_z_scores():
    s = _scores([-1.0, -2.0, -3.0, -4.0, -5.0], mu=[-1.0] * 5, sigma=[2.0] * 5)
    assert min_k_score(s, k=0.4) == pytest.approx(-4.5)
    assert min_k_plus_plus_score(s, k=0.4) == pytest.approx((-2.0 - 1.5) / 2)


def test_auc_and_privleak_orientation():
    assert auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert auc([0, 1, 2], [3, 4, 5]) == 0.0
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)  # forget fully recognisable: leak
    assert privleak(0.5, 0.5) == pytest.approx(0.0)
    assert privleak(0.25, 0.5) > 0  # over-unlearning


def test_rouge_and_containment():
    recall, f1 = rouge_l("She was born in Lisbon", "Lisbon")
    assert recall == 1.0 and f1 < 1.0
    assert rouge_l("Paris", "Lisbon")[0] == 0.0
    assert contains_answer("It was Lisbon.", ["lisbon"])
    assert not contains_answer("Lisboner", ["Lisbon"])


def test_bootstrap_interval_brackets_the_mean():
    values = np.random.default_rng(0).normal(0.5, 0.1, 200)
    low, high = bootstrap_ci(values, seed=1)
    assert low < values.mean() < high and high - low < 0.1
