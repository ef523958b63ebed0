"""The probe base class, the registry and the context a probe runs in.

In the manner of garak: a probe is a small class that declares its goal, the target kinds it
applies to, the data it needs, its thresholds and its paper; adding a probe is adding a class
decorated with ``@register``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from redteam.core.answers import PromptCalibration
from redteam.core.data import AuditData
from redteam.core.findings import Evidence, Finding, Metric
from redteam.core.prompts import PromptFormat
from redteam.core.settings import as_setting, default_values, resolve_settings
from redteam.core.severity import (
    LEVELS,
    SEVERITY_CUTS,
    SEVERITY_SETTING,
    check_cuts,
    severity_basis,
    severity_of,
)
from redteam.core.text_scoring import DEFAULT_PROFILE, ScoringProfile
from redteam.probes.recorded import RecordedRetrain, recorded_measurement
from redteam.targets import Target

REGISTRY: dict[str, type[Probe]] = {}

INCONCLUSIVE_REMEDIATION = (
    "Do not read this as a pass. Audit again in a prompt format the model answers in (its chat "
    "template with --prompt-format chat, or a template of its own with --prompt-format FILE), "
    "or give --reference the model before unlearning."
)


def register(cls: type[Probe]) -> type[Probe]:
    """Class decorator: make a probe selectable by its name."""
    if cls.name in REGISTRY:
        raise ValueError(f"probe {cls.name} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def suites() -> dict[str, list[str]]:
    """Every suite with its probes in run order, derived from the registry: a probe is in the
    suite its class names, at its declared ``order`` (ties by name)."""
    members: dict[str, list[type[Probe]]] = {}
    for cls in REGISTRY.values():
        members.setdefault(cls.suite, []).append(cls)
    return {suite: [cls.name for cls in sorted(classes, key=lambda c: (c.order, c.name))]
            for suite, classes in sorted(members.items())}


@dataclass
class ProbeResult:
    """What a probe that ran hands to the probes declaring it in ``after``: its findings and
    the typed value it passed to ``ProbeContext.hand_off`` (None when it handed nothing)."""

    findings: list[Finding]
    value: Any = None


@dataclass
class LanguageModelResources:
    """What the probes of a causal LM get besides the models: the memoising scorer of each
    model, the prompt format (and whether the model answers in it), and how a generated answer
    is scored against the reference one."""

    scorer_for: Callable[[Target], Any] | None = None
    prompt_format: PromptFormat = field(default_factory=PromptFormat)
    prompt_calibration: PromptCalibration | None = None
    # the benchmark's own scorer (redteam.core.text_scoring), from the data's benchmark or
    # ``[scoring] profile``
    scoring: ScoringProfile = DEFAULT_PROFILE


@dataclass
class ConceptResources:
    """What the probes of a diffusion pipeline get: the judge of whether an image shows the
    concept (redteam.judges) and the images of the concept given with --concept-images
    ([N, 3, H, W], or None)."""

    judge: Any
    images: Any = None


@dataclass
class ProbeContext:
    """What a probe may use besides the target and the data: what every probe gets (settings,
    seed, device, comparison models, earlier results, the measurement memo), and the resources
    of its target's kind, ``lm`` or ``concept`` (None for the other kinds)."""

    config: dict[str, Any]
    seed: int = 0
    device: str = "cpu"
    artifacts_dir: Path | None = None
    quiet: bool = True
    reference: Target | None = None
    retrain: Target | None = None
    lm: LanguageModelResources | None = None
    concept: ConceptResources | None = None
    results: dict[str, ProbeResult] = field(default_factory=dict)  # of the probes in ``after``
    handed_off: Any = None
    # --retrain-results: the retrained model's measurements, read from an earlier run instead
    # of loading and running that model again (redteam.probes.recorded).
    retrain_results: RecordedRetrain | None = None
    probe: str = ""  # the name of the probe this context is for
    data_key: Any = None  # what identifies the audit data (for the measurement memo)
    measurements: dict[str, Any] = field(default_factory=dict)  # what ``measure`` measured
    # Shared by the runs of one process (engine.ModelCache): a model measured once by a probe
    # with the same settings, data, prompt format and seed is not measured again.
    measurement_memo: dict | None = None

    def scorer(self, target: Target):
        """The shared, memoising scorer of ``target`` (see redteam.core.scoring)."""
        return self.lm.scorer_for(target)

    def shots(self, configured: int) -> int:
        """The number of few-shot examples: the prompt format's, when it sets one."""
        shots = self.lm.prompt_format.shots
        return configured if shots is None else shots

    def baselines(self) -> dict[str, Target]:
        """The comparison models given on the command line, by label."""
        models = {"reference": self.reference, "retrain": self.retrain}
        return {label: model for label, model in models.items() if model is not None}

    @property
    def has_retrain(self) -> bool:
        """Whether the retrained model's measurements are at hand (loaded or recorded)."""
        return self.retrain is not None or self.retrain_results is not None

    def measure(self, target: Target, measure: Callable[[Target], Any],
                labels: tuple[str, ...] = ("target", "reference", "retrain")) -> dict[str, Any]:
        """``measure(model)`` of the audited model (label ``target``) and of each comparison
        model given, by label, in that order.

        Each value passes through JSON (so it is what a later run reads back) and is kept in
        ``measurements``, which the engine writes into the probe's finding; with
        ``--retrain-results`` the retrained model's value is the one recorded there, so the
        run equals one with ``--retrain`` without loading that model.
        """
        models = {"target": target, **self.baselines()}
        out: dict[str, Any] = {}
        for label in labels:
            if label == "retrain" and self.retrain_results is not None:
                text = json.dumps(recorded_measurement(self.retrain_results, self.probe))
            elif label in models:
                text = self._measured(models[label], measure)
            else:
                continue
            out[label] = json.loads(text)
            self.measurements[label] = json.loads(text)  # kept apart from the probe's edits
        return out

    def _measured(self, model: Target, measure: Callable[[Target], Any]) -> str:
        """``measure(model)`` as JSON text, from the memo when this probe measured this model
        the same way earlier in the process."""
        if self.data_key is None:
            return json.dumps(measure(model))
        lm = self.lm
        asked = (repr(lm.prompt_format), lm.scoring.name,
                 id(self.scorer(model)) if lm.scorer_for else None) if lm else ()
        key = (self.probe, id(model), json.dumps(self.config, sort_keys=True, default=str),
               self.data_key, self.seed, *asked)
        return self._memo_text(key, lambda: measure(model))

    def memoised(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()``, passed through JSON; taken from the memo when a run of this process
        computed it under the same ``key``, probe, settings, seed and device. For work that
        does not depend on the audited model, e.g. training a learner on a clean folder that
        two ``evaluate-protection`` runs share."""
        key = ("memoised", self.probe, json.dumps(self.config, sort_keys=True, default=str),
               self.seed, self.device, *key)
        return json.loads(self._memo_text(key, compute))

    def _memo_text(self, key: tuple, compute: Callable[[], Any]) -> str:
        if self.measurement_memo is None:
            return json.dumps(compute())
        if key not in self.measurement_memo:
            self.measurement_memo[key] = json.dumps(compute())
        return self.measurement_memo[key]

    def upstream(self, name: str) -> Any:
        """The value the earlier probe ``name`` (declared in ``after``) handed off, or None
        when it did not run in this run, was skipped, crashed or handed nothing."""
        result = self.results.get(name)
        return None if result is None else result.value

    def hand_off(self, value: Any) -> None:
        """Give ``value`` to the later probes that declare this one in ``after``."""
        self.handed_off = value


class FindingSource:
    """Anything that reports findings: a probe, or a step a command adds after the probes.

    Holds the small constructors, so every finding carries its source's name, suite and paper.
    """

    name: ClassVar[str]
    suite: ClassVar[str]
    title: ClassVar[str]
    references: ClassVar[tuple[str, ...]] = ()
    remediation: ClassVar[str] = ""
    # Raised whenever what it measures or how it decides changes, so that ``report diff`` can
    # tell a changed probe from a changed model (recorded per run in ``probe_versions``).
    version: ClassVar[int] = 1
    after: ClassVar[tuple[str, ...]] = ()  # earlier probes whose results this one reads
    # How its failures' severity is set when not by the one policy (redteam.core.severity).
    severity_rule: ClassVar[str] = ""
    # True when the probe compares with the retrained model through ``ProbeContext.measure``,
    # so that --retrain-results must hold its measurements.
    uses_retrain: ClassVar[bool] = False
    # True when a pass rests on the model failing to answer questions: such a pass means
    # nothing if the model answers none of its retain questions in the prompt format used, and
    # the engine reports it as inconclusive instead (redteam.core.answers).
    judges_answers: ClassVar[bool] = False
    # What of the model it uses (redteam.core.served.MODEL_ACCESS): a model behind an endpoint
    # gives only some of it, and the engine skips a probe it cannot serve, naming what is missing.
    model_access: ClassVar[tuple[str, ...]] = ()
    config: dict[str, Any]

    def missing_data(self, data: Any) -> str | None:
        """Why this cannot run on ``data``, or None."""
        return None

    def run(self, target: Target, data: Any, ctx: ProbeContext) -> list[Finding]:
        raise NotImplementedError

    def finding(self, status: str, severity: str, summary: str, *, metric: Metric | None = None,
                evidence: list[Evidence] | None = None, details: dict | None = None,
                artifacts: list[str] | None = None, remediation: str | None = None) -> Finding:
        details = details or {}
        if status == "fail" and "severity_basis" not in details:
            details["severity_basis"] = (f"the probe's own rule: {self.severity_rule}"
                                         if self.severity_rule else "set by the probe")
        return Finding(
            probe=self.name, suite=self.suite, title=self.title, status=status,
            severity=severity, metric=metric, summary=summary, evidence=evidence or [],
            details=details, artifacts=artifacts or [],
            references=list(self.references),
            remediation=self.remediation if remediation is None else remediation,
        )

    def failure(self, summary: str, metric: Metric, at_most: str = "critical",
                **fields: Any) -> Finding:
        """A failure whose severity is the policy's for how far ``metric`` is past its
        threshold (redteam.core.severity), with this probe's ``severity`` cut points, and no
        higher than ``at_most`` (a cap the probe's ``severity_rule`` states)."""
        cuts = self.config.get("severity", SEVERITY_CUTS)
        basis = severity_basis(metric, cuts)
        severity = min(severity_of(metric, cuts), at_most, key=LEVELS.index)
        if at_most != "critical":
            basis += f"; at most {at_most}: {self.severity_rule}"
        details = {**fields.pop("details", {}), "severity_basis": basis}
        return self.finding("fail", severity, summary, metric=metric, details=details, **fields)

    def judged(self, failed: bool, summary: str, metric: Metric, at_most: str = "critical",
               **fields: Any) -> Finding:
        """A ``failure`` (no more severe than ``at_most``) when ``failed``, else a pass (which
        needs no remediation)."""
        if failed:
            return self.failure(summary, metric, at_most=at_most, **fields)
        return self.finding("pass", "info", summary, metric=metric, remediation="", **fields)

    def skipped(self, reason: str) -> Finding:
        return self.finding("skipped", "info", reason, remediation="")

    def inconclusive(self, reason: str, measured: Finding | None = None,
                     remediation: str = INCONCLUSIVE_REMEDIATION) -> Finding:
        """A finding that says the probe could not decide, and why; what it measured anyway
        (``measured``'s metric, details, evidence and artifacts) is kept for the reader; it has
        no severity, so no severity basis."""
        summary = f"Inconclusive: {reason}."
        if measured is not None:
            summary += f" What was measured: {measured.summary}"
            details = {k: v for k, v in measured.details.items() if k != "severity_basis"}
            return self.finding("inconclusive", "info", summary, metric=measured.metric,
                                details=details, evidence=measured.evidence,
                                artifacts=measured.artifacts, remediation=remediation)
        return self.finding("inconclusive", "info", summary, remediation=remediation)


class Probe(FindingSource):
    """Base class. Subclasses set the class attributes and implement ``run``.

    A probe that reads an earlier probe's result names it in ``after`` (and is ordered after
    it in its suite); the engine then gives it that probe's ``ProbeResult`` in ``ctx.results``.
    """

    order: ClassVar[int] = 500  # position in its suite (suites come from the registry)
    goal: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]] = ("causal-lm",)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {}  # audit JSONL: split -> fields
    data: ClassVar[str] = ""  # what --data is, for probes whose data is not the audit JSONL
    tags: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}  # name -> Setting (redteam.core.settings)

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        """``config`` overrides the declared defaults; each value is checked by type and range
        (``ValueError`` naming the setting), so a bad one is refused before any model loads."""
        self.config = resolve_settings(self.name, self.declared_settings(), config)
        try:
            check_cuts(self.config["severity"])
        except ValueError as exc:
            raise ValueError(f"{self.name}.{exc}") from None

    @classmethod
    def declared_settings(cls) -> dict[str, Any]:
        """The declared settings, with the severity cut points every probe has."""
        return {**cls.defaults, "severity": SEVERITY_SETTING}

    def missing_data(self, data: AuditData | None) -> str | None:
        """Why this probe cannot run on ``data``, or None when every needed field is there."""
        for split, fields in self.needs.items():
            if data is None:
                return f"needs audit data (--data) with {split} items"
            if not data.with_fields(split, *fields):
                return f"needs {split} items with {', '.join(fields)}; {data.path.name} has none"
        return None

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Plain-data description for ``redteam list``."""
        return {
            "name": cls.name, "suite": cls.suite, "title": cls.title, "goal": cls.goal,
            "kinds": list(cls.kinds), "needs": {k: list(v) for k, v in cls.needs.items()},
            "data": cls.data, "after": list(cls.after),
            "references": list(cls.references), "tags": list(cls.tags),
            "defaults": default_values(cls.declared_settings()),
            "settings": {name: as_setting(value).describe()
                         for name, value in cls.declared_settings().items()},
            "severity_rule": cls.severity_rule, "version": cls.version,
            "model_access": list(cls.model_access),
        }


class ImageProbe(Probe):
    """A probe of image classifiers; its data is a folder of clean images."""

    kinds = ("image-classifier",)
    data = "a folder of clean images, one sub-folder per class"

    def missing_data(self, data) -> str | None:
        from redteam.core.vision import ImageFolder

        if not isinstance(data, ImageFolder):
            return "needs a folder of clean images (--data DIR, one sub-folder per class)"
        return None
