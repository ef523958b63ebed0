"""Probe families. Importing this package registers the built-in probes; third-party probes
register through the ``redteam.probes`` entry-point group (see ``load_plugins``). Suites are
derived from the registry (``suites``): a probe is in the suite its class names."""

from __future__ import annotations

from importlib.metadata import entry_points

from redteam.probes import (  # noqa: F401  (registers the probes)
    adversarial,
    backdoor,
    concept,
    knowledge,
    likelihood,
    linear_probe,
    membership,
    memorization,
    parametric_traces,
    protection,
    reintroduction,
    relearning,
    rwku,
    safety,
    text_adversarial,
    worst_case,
)
from redteam.probes.base import REGISTRY, Probe, ProbeContext, register, suites


def load_plugins() -> None:
    """Import third-party probe modules declared under the ``redteam.probes`` entry points."""
    for entry in entry_points(group="redteam.probes"):
        probe = entry.load()
        if isinstance(probe, type) and issubclass(probe, Probe) and probe.name not in REGISTRY:
            register(probe)


__all__ = ["REGISTRY", "Probe", "ProbeContext", "load_plugins", "register", "suites"]
