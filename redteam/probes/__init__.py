"""Probe families. Importing this package registers the built-in probes; third-party probes
register through the ``redteam.probes`` entry-point group (see ``load_plugins``)."""

from __future__ import annotations

from importlib.metadata import entry_points

from redteam.probes import (  # noqa: F401  (registers the probes)
    adversarial,
    backdoor,
    knowledge,
    linear_probe,
    membership,
    memorization,
    parametric_traces,
    reintroduction,
    relearning,
    rwku,
    safety,
    text_adversarial,
    worst_case,
)
from redteam.probes.base import REGISTRY, Probe, ProbeContext, register

SUITES: dict[str, list[str]] = {
    "unlearning": [
        "unlearning.knowledge_qa",
        "unlearning.verbatim",
        "unlearning.membership_inference",
        "unlearning.exact_memorization",
        "unlearning.adversarial_prompts",
        "unlearning.incontext_reintroduction",
        "unlearning.relearning_attack",
        "unlearning.linear_probe",
        "unlearning.parametric_traces",
        "unlearning.utility",
        "unlearning.worst_case_items",
    ],
    "backdoor": ["backdoor.exposure", "backdoor.trigger_recovery", "backdoor.removal"],
    "adversarial": [
        "adversarial.fgsm",
        "adversarial.pgd_linf",
        "adversarial.pgd_l2",
        "adversarial.cw",
        "adversarial.autoattack",
        "adversarial.deepwordbug",
        "adversarial.pruthi",
        "adversarial.textfooler",
        "adversarial.pwws",
        "adversarial.bert_attack",
        "adversarial.bae",
        "adversarial.a2t",
        "adversarial.textbugger",
    ],
    "concept": [],
    "safety": ["safety.safe_retrieval", "safety.unsafe_retrieval", "safety.unsafe_classification"],
}


def load_plugins() -> None:
    """Import third-party probe modules declared under the ``redteam.probes`` entry points."""
    for entry in entry_points(group="redteam.probes"):
        probe = entry.load()
        if isinstance(probe, type) and issubclass(probe, Probe) and probe.name not in REGISTRY:
            register(probe)
            SUITES.setdefault(probe.suite, []).append(probe.name)


__all__ = ["REGISTRY", "SUITES", "Probe", "ProbeContext", "load_plugins", "register"]
