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


def test_zlib_divides_the_mean_nll_not_the_sum():
    import zlib

    from redteam.core.metrics import zlib_score

    text = "The quick brown fox jumps over the lazy dog."
    size = len(zlib.compress(text.encode("utf-8")))
    short, long = _scores([-1.0, -3.0]), _scores([-1.0, -3.0] * 5)
    assert zlib_score(short, text) == pytest.approx(-2.0 / size)
    assert zlib_score(long, text) == zlib_score(short, text)  # length does not scale it


def test_truth_ratio_is_the_geometric_mean_and_tofu_aggregates():
    from redteam.probes.likelihood import (
        tofu_forget_truth_score,
        tofu_retain_truth_score,
        truth_ratio,
    )

    perturbed = np.log([0.1, 0.4])  # mean token log-probs of two wrong answers
    # geometric mean 0.2 (the arithmetic mean would be 0.25) over the paraphrase's 0.5
    assert truth_ratio(perturbed, np.log(0.5)) == pytest.approx(0.4)
    ratios = [0.5, 2.0, 1.0]
    assert tofu_forget_truth_score(ratios) == pytest.approx(np.mean([0.5, 0.5, 1.0]))
    assert tofu_retain_truth_score(ratios) == pytest.approx(np.mean([0.5, 0.0, 0.0]))


def test_privleak_adds_epsilon_instead_of_flooring():
    # a retrained model with AUC 0.9995 (MUSE's 0.0005): the reference divides by it as it is
    assert privleak(0.999, 0.9995) == pytest.approx((0.001 - 0.0005) / (0.0005 + 1e-10) * 100)


def test_share_interval_is_exact_and_never_collapses():
    from redteam.core.metrics import mean_ci, proportion_ci, share_ci

    assert share_ci([1.0] * 12) == [0.7353, 1.0]  # 0.025 ** (1 / 12), rounded down
    assert share_ci([0] * 12) == [0.0, 0.2647]
    assert proportion_ci(6, 12) == [0.2109, 0.7891]
    assert mean_ci([0.5, 1.0, 0.25, 0.0]) == bootstrap_ci([0.5, 1.0, 0.25, 0.0])  # scores
    assert mean_ci([1, 0, 1]) == proportion_ci(2, 3)  # outcomes
    with pytest.raises(ValueError, match="0/1 outcomes"):
        share_ci([0.5, 1.0])


@pytest.mark.parametrize("n", [12, 64])
@pytest.mark.parametrize("p", [0.5, 0.9, 0.97])
def test_share_interval_holds_its_coverage(p, n):
    """Simulated audits: the 95% interval of k/n covers the true rate at least 93% of the
    time (the percentile bootstrap of the same outcomes covers 0.97 at n = 12 about 31% of
    the time: it is [1, 1] whenever all 12 succeed)."""
    from redteam.core.metrics import proportion_ci

    draws = np.random.default_rng(7).binomial(n, p, size=4000)
    interval = {k: proportion_ci(int(k), n) for k in np.unique(draws)}
    covered = np.mean([interval[k][0] <= p <= interval[k][1] for k in draws])
    assert covered >= 0.93, covered
    if (p, n) == (0.97, 12):
        boot = {k: bootstrap_ci([1.0] * int(k) + [0.0] * (n - int(k)), seed=1)
                for k in np.unique(draws)}
        assert np.mean([boot[k][0] <= p <= boot[k][1] for k in draws]) < 0.5
