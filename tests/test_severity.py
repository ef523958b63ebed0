"""The one severity policy: distance past the threshold, toward the worst value, sets severity."""

import pytest

from redteam.core.errors import InputError
from redteam.core.findings import Metric
from redteam.core.severity import past_threshold, severity_basis, severity_of
from redteam.engine import check_settings, select_probes
from redteam.probes import REGISTRY, load_plugins

load_plugins()


@pytest.mark.parametrize(("value", "expected"), [(0.31, "low"), (0.40, "medium"),
                                                 (0.60, "high"), (0.90, "critical")])
def test_severity_rises_with_the_distance_past_the_threshold(value, expected):
    metric = Metric("leak", value, 0.3, higher_is_worse=True)
    assert severity_of(metric) == expected


def test_lower_is_worse_metrics_and_declared_worst_values():
    p_value = Metric("forget quality", 1e-7, 0.05, higher_is_worse=False)
    assert past_threshold(p_value) == pytest.approx(1.0, abs=1e-5)
    assert severity_of(Metric("forget quality", 0.046, 0.05, higher_is_worse=False)) == "low"
    privleak = Metric("PrivLeak", -60.0, -20.0, higher_is_worse=False, worst=-100.0)
    assert past_threshold(privleak) == pytest.approx(0.5)
    leak = Metric("recall", 0.5, 0.3, higher_is_worse=True, worst=0.7)  # reference knew 0.7
    assert past_threshold(leak) == pytest.approx(0.5) and severity_of(leak) == "high"
    beyond_reference = Metric("recall", 0.5, 0.3, higher_is_worse=True, worst=0.2)
    assert past_threshold(beyond_reference) == pytest.approx(2 / 7)  # the range's end instead
    assert "0.50 of the way from the threshold 0.3 to the worst value 0.7" in \
        severity_basis(leak, (0.1, 0.25, 0.75))


def test_cut_points_are_a_checked_setting_of_every_probe():
    probe = REGISTRY["unlearning.knowledge_qa"]({"severity": [0.0, 0.0, 0.0]})
    metric = Metric("recall", 0.31, 0.3)
    finding = probe.failure("leaks", metric)
    assert finding.severity == "critical"
    assert "severity_basis" in finding.details
    assert REGISTRY["unlearning.knowledge_qa"]().failure("leaks", metric).severity == "low"
    classes = select_probes("unlearning", ["unlearning.knowledge_qa"])
    for bad in ([0.5, 0.2, 0.9], [0.1, 0.2], [0.1, 0.2, 1.5], "high"):
        config = {"probes": {"unlearning.knowledge_qa": {"severity": bad}}}
        with pytest.raises(InputError, match="unlearning.knowledge_qa.severity"):
            check_settings(config, classes, "audit.toml")
    assert all("severity" in cls.describe()["settings"] for cls in REGISTRY.values())


def test_a_probe_with_its_own_rule_says_so_in_the_failure():
    probe = REGISTRY["backdoor.trigger_recovery"]()
    finding = probe.finding("fail", "low", "a lead", metric=Metric("mask", 0.1, 0.2))
    assert finding.details["severity_basis"].startswith("the probe's own rule: high when")


def test_an_inconclusive_finding_keeps_what_was_measured_but_no_severity():
    probe = REGISTRY["backdoor.exposure"]()
    measured = probe.finding("fail", "low", "one statistic fires",
                             metric=Metric("VAR", 0.02, 0.01), details={"target_label": "3"})
    finding = probe.inconclusive("only one of the two statistics fires", measured=measured)
    assert finding.status == "inconclusive" and finding.details == {"target_label": "3"}
