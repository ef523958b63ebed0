"""Run a suite of probes against a target and write the run directory.

Steps of a run, in order: validate the request (suite, probe names, config, output folder), load
the data and the models, select the probes that apply, run each with error isolation while
appending to ``events.jsonl``, then write ``findings.json`` and ``report.html`` atomically and
compute the exit code (docs/architecture.md, "The life of an audit").
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from redteam import __version__
from redteam.core.answers import (
    PROMPT_SETTINGS,
    PromptCalibration,
    calibrate_prompt_format,
    format_candidates,
)
from redteam.core.budget import PASS_THROUGH
from redteam.core.data import AuditData
from redteam.core.distributed import (
    is_main_process,
    process_count,
    process_device,
    wait_for_everyone,
)
from redteam.core.errors import InputError, RunInterrupted
from redteam.core.fileio import atomic_write_json
from redteam.core.findings import (
    SEVERITIES,
    Finding,
    RunRecord,
    fails_gate,
    findings_document,
)
from redteam.core.http import EndpointError
from redteam.core.outputs import (
    check_output_path,
    claim_output,
    seal_output,
    terminate_as_interrupt,
)
from redteam.core.prompts import PromptFormat
from redteam.core.scoring import CausalLMScorer
from redteam.core.served import MODEL_ACCESS, ServedScorer
from redteam.core.settings import choice, integer, resolve_settings
from redteam.core.text_scoring import AUTO, PROFILES, ScoringProfile, scoring_profile
from redteam.core.training import seed_everything
from redteam.core.untrusted import read_text_file
from redteam.probes import REGISTRY, Probe, ProbeContext, load_plugins, suites
from redteam.probes.base import (
    ConceptResources,
    FindingSource,
    LanguageModelResources,
    ProbeResult,
)
from redteam.probes.recorded import MEASUREMENTS, check_retrain_results, read_retrain_results
from redteam.targets import (
    TARGET_KINDS,
    EndpointSpec,
    Target,
    detect_kind,
    load_served_target,
    load_target,
    resolve_device,
)

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_NOTHING_APPLIED = 0, 1, 2, 3
DEFAULT_FORMATS = ("html", "json")  # what a run folder holds unless --format says more
LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "scikit-learn",
             "rouge-score", "accelerate", "peft", "torchattacks", "textattack", "nltk", "geoopt")


@dataclass
class AuditRequest:
    """Everything ``redteam audit`` was asked to do (plain data; the CLI fills it)."""

    model: Path | EndpointSpec  # a folder, or a model behind an endpoint
    suite: str
    data: Path | None = None
    reference: Path | EndpointSpec | None = None
    retrain: Path | EndpointSpec | None = None
    retrain_results: Path | None = None  # an earlier run holding the retrained model's values
    out: Path | None = None
    probes: list[str] | None = None
    device: str = "auto"
    seed: int = 0
    fail_on: str = "high"
    config: Path | None = None
    kind: str | None = None
    base: Path | None = None  # the base model of a PEFT adapter given as a model
    max_items: int | None = None  # per split of LLM audit data (over the config's [data])
    batch_size: int | None = None  # of scoring and generation (over the config's [scoring])
    prompt_format: PromptFormat = field(default_factory=lambda: PromptFormat("auto"))
    allow_pickle: bool = False
    overwrite: bool = False
    quiet: bool = False
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    settings: dict[str, dict] = field(default_factory=dict)  # probe -> settings over the config
    # Actions a command adds after the probes, e.g. `expose --remove` writing a repaired model:
    # each reads the probes' results (its ``after``) and reports what it did as findings.
    steps: list[FindingSource] = field(default_factory=list)
    formats: tuple[str, ...] = DEFAULT_FORMATS  # reports.machine.FORMATS
    resume: bool = False  # continue the interrupted run in ``out`` (same model, data, settings)
    extra_inputs: dict[str, Path] = field(default_factory=dict)  # label -> path, never written
    # Concept audits of diffusion pipelines (redteam.judges): the judge (a classifier folder
    # or "nudenet"), its label of the concept, its top-k, and images of the concept.
    judge: str | None = None
    concept_label: str | None = None
    judge_top_k: int = 1
    concept_images: Path | None = None


@dataclass
class AuditResult:
    exit_code: int
    out_dir: Path
    findings: list[Finding]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def select_probes(suite: str, names: list[str] | None) -> list[type[Probe]]:
    """Probes of ``suite`` (optionally narrowed to ``names``); unknown names are bad input."""
    load_plugins()
    known = suites()
    if suite not in known:
        raise InputError(f"--suite {suite}: unknown suite (known: {', '.join(known)})")
    chosen = names or known[suite]
    for name in chosen:
        if name not in REGISTRY:
            raise InputError(f"--probe {name}: unknown probe (see `redteam list`)")
        if REGISTRY[name].suite != suite:
            owner = REGISTRY[name].suite
            raise InputError(f"--probe {name}: belongs to suite {owner}, not {suite}")
    return [REGISTRY[name] for name in chosen]


# ``profile``: how generated answers are scored (redteam.core.text_scoring); "auto" takes the
# profile of the benchmark the audit data was imported from (the default one for a plain file).
SCORING_SETTINGS = {"batch_size": integer(16, low=1), "max_length": integer(512, low=8),
                    "profile": choice(AUTO, (AUTO, *PROFILES))}
DATA_SETTINGS = {"max_items": integer(0)}  # items per split of LLM audit data; 0: all
SECTIONS = ("probes", "scoring", "data", "prompt")


def load_config(path: Path | None) -> dict:
    """Read ``audit.toml``: ``[probes."family.name"]`` tables of settings, ``[scoring]``,
    ``[data]`` and ``[prompt]`` (the prompt-format calibration, ``redteam.core.answers``).

    Only the shape is checked here (sections, tables, probe names); the values are checked
    against the probes' declared settings by ``check_settings``.
    """
    if path is None:
        return {}
    try:
        config = tomllib.loads(read_text_file(path, "config file"))
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc or 'nested too deeply'})") from None
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise InputError(f"{path}: {unknown[0]}: unknown section (known: {', '.join(SECTIONS)})")
    for section in SECTIONS:
        if not isinstance(config.get(section, {}), dict):
            raise InputError(f"{path}: {section}: expected a table")
    for name, table in config.get("probes", {}).items():
        if name not in REGISTRY:
            raise InputError(f"{path}: probes.{name}: unknown probe")
        if not isinstance(table, dict):
            raise InputError(f"{path}: probes.{name} = {table!r}: expected a table of "
                             f"settings, e.g. [probes.\"{name}\"] threshold = 0.3")
    return config


def check_settings(config: dict, probe_classes: list[type[Probe]],
                   where: str) -> tuple[list[Probe], dict, dict, dict]:
    """The probes built with their checked settings, and the checked ``[scoring]``, ``[data]``
    and ``[prompt]`` values.

    Every probe named in the config is checked, not only those selected, so a typo in a
    setting of another suite is found too. Bad values are ``InputError`` naming ``where``.
    """
    tables = config.get("probes", {})
    try:
        for name, table in tables.items():
            REGISTRY[name](table)
        probes = [cls(tables.get(cls.name)) for cls in probe_classes]
        scoring = resolve_settings("scoring", SCORING_SETTINGS, config.get("scoring"))
        selection = resolve_settings("data", DATA_SETTINGS, config.get("data"))
        prompt = resolve_settings("prompt", PROMPT_SETTINGS, config.get("prompt"))
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    return probes, scoring, selection, prompt


def audit_data_key(data) -> tuple | None:
    """The audit data's file and the lines of its items (a sample differs from the whole)."""
    if not isinstance(data, AuditData):
        return None
    return (str(Path(data.path).resolve()), tuple(item.line for item in data.items))


def profile_of(scoring: dict, data) -> ScoringProfile:
    """The scoring profile of a run: ``[scoring] profile``, or the data's benchmark's."""
    return scoring_profile(scoring["profile"],
                           data.benchmark if isinstance(data, AuditData) else "")


def measured_with(probes: list[Probe], scoring: dict, selection: dict,
                  data=None) -> dict[str, Any]:
    """The resolved settings the measurements of the retrained model depend on (scoring, with
    the profile that scored the answers; data selection; the settings of each probe that
    compares with it)."""
    return {"[scoring]": {**scoring, "profile": profile_of(scoring, data).name},
            "[data]": selection,
            **{probe.name: probe.config for probe in probes if probe.uses_retrain}}


def kind_of(request: AuditRequest) -> str:
    """The target's kind, given or detected once; an endpoint serves a causal LM, and only a
    causal LM is compared with models behind endpoints."""
    kind = _target_kind(request)
    for option, model in (("--reference", request.reference), ("--retrain", request.retrain)):
        if isinstance(model, EndpointSpec) and kind != "causal-lm":
            raise InputError(f"{option} {model.url}: an endpoint serves a causal LM, and the "
                             f"target is kind {kind}")
    return kind


def _target_kind(request: AuditRequest) -> str:
    if isinstance(request.model, EndpointSpec):
        if request.kind not in (None, "causal-lm"):
            raise InputError(f"--kind {request.kind}: an endpoint serves a causal LM")
        if request.base is not None:
            raise InputError("--base: applies to an adapter folder, not to an endpoint")
        return "causal-lm"
    return request.kind or detect_kind(request.model)


CONCEPT_OPTIONS = ("judge", "concept_label", "concept_images")


def check_concept_request(request: AuditRequest, kind: str, probes: list[Probe]) -> None:
    """The concept options go with a diffusion pipeline, which needs a judge; the attack needs
    an image of the concept (``--concept-images`` or a ``--reference`` pipeline to make one)."""
    given = [name for name in CONCEPT_OPTIONS if getattr(request, name)]
    if kind != "diffusion":
        if given:
            option = "--" + given[0].replace("_", "-")
            raise InputError(f"{option}: applies to diffusion pipelines only (the model is "
                             f"kind {kind})")
        return
    if request.retrain or request.retrain_results:
        raise InputError("--retrain: a concept audit compares with the --reference pipeline "
                         "only")
    if not request.judge:
        raise InputError("--judge: a concept audit needs a judge (an image-classifier folder "
                         "with --concept-label, or nudenet)")
    if request.reference and detect_kind(request.reference) != "diffusion":
        raise InputError(f"--reference {request.reference}: must be a diffusion pipeline, the "
                         "model before erasure")
    attacking = any(probe.name == "concept.unlearndiffatk" for probe in probes)
    if attacking and not (request.reference or request.concept_images):
        raise InputError("concept.unlearndiffatk needs images of the concept: --concept-images "
                         "DIR, or --reference ORIGINAL to generate them")


def load_concept_judge(request: AuditRequest, device: str):
    """The judge of a concept audit (``redteam.judges``), or None for other audits."""
    if not request.judge:
        return None
    from redteam.judges import load_judge

    return load_judge(request.judge, request.concept_label, request.judge_top_k, device,
                      request.allow_pickle)


def load_data(path: Path, kind: str, target: Target | None = None):
    """The audit data of ``kind`` (``TARGET_KINDS``): read before the model when it does not
    depend on it, else against the loaded ``target`` (None: not yet, so nothing is read)."""
    entry = TARGET_KINDS[kind]
    if entry.load_data is None or (entry.data_needs_model and target is None):
        return None
    return entry.load_data(path, target)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "redteam": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


class EventLog:
    """``events.jsonl``: one line per event, flushed as the run goes, so it survives a crash."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, event: str, **fields) -> None:
        line = json.dumps({"time": now(), "event": event, **fields}, ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()


def run_probe(probe: FindingSource, target: Target, data: AuditData | None,
              ctx: ProbeContext, events: EventLog) -> list[Finding]:
    """Run one probe (or a command's step); a crash becomes an ``error`` finding and the run
    goes on. One that a served model cannot give what it uses, or whose data is missing, is
    skipped, saying why."""
    events.write("probe_start", probe=probe.name)
    started = time.perf_counter()
    reason = missing_access(probe, target, ctx) or probe.missing_data(data)
    if reason:
        findings = [probe.skipped(reason)]
    else:
        try:
            findings = probe.run(target, data, ctx)
        except (*PASS_THROUGH, EndpointError):  # no verdict on what an endpoint sent
            raise
        except BaseException as exc:  # noqa: BLE001  (isolation is the point; Rust panics too)
            ctx.handed_off = None  # nothing half-made reaches the probes after it
            findings = [probe.finding(
                "error", "high",
                f"The probe crashed, so this property was not checked: "
                f"{type(exc).__name__}: {exc}",
                details={"traceback": traceback.format_exc(limit=8)},
                remediation="Fix the input or report the bug; re-run before relying on the audit.",
            )]
    if ctx.measurements and findings[0].status != "error":  # what --retrain-results reads
        findings[0].details[MEASUREMENTS] = ctx.measurements
    findings = [withhold_unmeasurable_pass(probe, refuse_non_finite_verdict(probe, finding), ctx)
                for finding in findings]
    duration = round(time.perf_counter() - started, 3)
    for finding in findings:
        finding.duration_s = duration
        events.write("probe_end", probe=probe.name, status=finding.status,
                     severity=finding.severity, duration_s=duration,
                     finding=finding.to_dict())  # what --resume re-uses
    return findings


def refuse_non_finite_verdict(probe: FindingSource, finding: Finding) -> Finding:
    """A verdict on a NaN or infinite figure becomes an ``error`` naming it. NaN compares false
    with every threshold, so a probe would call it a pass (or, as an anomaly index, anything):
    a broken model or input that got past the load checks never gets a verdict."""
    metric = finding.metric
    if finding.status in ("error", "skipped") or metric is None:
        return finding
    figures = {f"The measured {metric.name}": metric.value,
               f"The threshold of {metric.name}": metric.threshold,
               **{f"The {label} baseline of {metric.name}": value
                  for label, value in metric.baselines.items()}}
    for name, value in figures.items():
        if isinstance(value, int | float) and not math.isfinite(value):
            return probe.finding(
                "error", "high", f"{name} is {value}, so no verdict was given: "
                f"the model's outputs (or the data) are not finite numbers.",
                details={"measured": finding.to_dict()},
                remediation="Check the model's weights and the data; re-run before relying on "
                            "the audit.")
    return finding


def withhold_unmeasurable_pass(probe: FindingSource, finding: Finding,
                               ctx: ProbeContext) -> Finding:
    """A pass of a probe that judges by the model's answers becomes ``inconclusive`` when the
    model answers almost none of its retain questions in the prompt format used (a failure
    stands: leaked answers are leaked whatever the format)."""
    calibration = ctx.lm.prompt_calibration if ctx.lm else None
    if not (probe.judges_answers and finding.status == "pass" and calibration is not None
            and calibration.measurable is False):
        return finding
    return probe.inconclusive(calibration.reason, measured=finding)


def exit_code_for(findings: list[Finding], fail_on: str) -> int:
    if not findings or all(f.status == "skipped" for f in findings):
        return EXIT_NOTHING_APPLIED
    return EXIT_FINDINGS if any(fails_gate(f, fail_on) for f in findings) else EXIT_OK


RUNS = Path("redteam-runs")  # where runs go without --out (relative to the working folder)


def default_out_dir(model: Path | EndpointSpec) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = model.label if isinstance(model, EndpointSpec) else model.resolve().name
    return RUNS / f"{name.replace('/', '-')}-{stamp}"


class ModelCache:
    """Loaded models, their memoising scorers and the probes' measurement memo, reusable across
    runs in one process.

    ``redteam demo`` audits five variants against the same reference and retrain models; with
    one cache they are loaded, and their answers generated, once. Its two protections of one
    clean folder share one too: the learner trains on the clean images once per probe
    (``ProbeContext.memoised``).
    """

    def __init__(self) -> None:
        self._targets: dict[tuple, Target] = {}
        self._scorers: dict[tuple, CausalLMScorer] = {}
        self.measurements: dict[tuple, str] = {}  # ProbeContext.measure's memo

    def target(self, path: Path | EndpointSpec, kind: str | None, device: str,
               allow_pickle: bool, base: Path | None = None, quiet: bool = True) -> Target:
        if isinstance(path, EndpointSpec):
            if path not in self._targets:
                self._targets[path] = load_served_target(path, quiet)
            return self._targets[path]
        # keyed by the kind it loads as, given or detected: one model audited in one run and
        # compared with in another is loaded once
        kind = kind or detect_kind(path)
        key = (str(Path(path).resolve()), kind, device, allow_pickle, str(base))
        if key not in self._targets:
            self._targets[key] = load_target(path, kind=kind, device=device,
                                             allow_pickle=allow_pickle, base=base)
        return self._targets[key]

    def scorer(self, target: Target, batch_size: int, max_length: int,
               quiet: bool) -> CausalLMScorer | ServedScorer:
        key = (id(target), batch_size, max_length)
        if key not in self._scorers:
            self._scorers[key] = (
                ServedScorer(target.served, target.tokenizer, max_length, quiet)
                if target.served is not None else
                CausalLMScorer(target.model, target.tokenizer, batch_size, max_length, quiet))
        self._scorers[key].quiet = quiet
        return self._scorers[key]


@dataclass
class AuditPlan:
    """A request once checked (step 1): the probes with their settings, the resolved
    ``[scoring]``, ``[data]`` and ``[prompt]`` values, the target kind (detected once), the
    device, the run folder, and what was read before any model loads."""

    probes: list[Probe]
    probe_classes: list[type[Probe]]
    config: dict
    scoring: dict
    selection: dict
    prompt_settings: dict
    kind: str
    device: str
    quiet: bool
    out: Path
    early_data: Any = None  # audit data that does not depend on the model, read in step 1
    recorded: Any = None  # --retrain-results: the earlier run's measurements


@dataclass
class LoadedInputs:
    """The models and data of an audit (step 2)."""

    target: Target
    data: Any
    reference: Target | None = None
    retrain: Target | None = None
    judge: Any = None
    concept_images: Any = None


def run_audit(request: AuditRequest, cache: ModelCache | None = None) -> AuditResult:
    """Run ``request`` end to end; returns the exit code and the run folder.

    The steps, each a function below: 1. check the request (nothing loads before it passes),
    2. load the models and the data, 3. choose the prompt format (LLMs), 4. hash every input
    into the record, 5. run the probes in the run folder and write it. ``cache`` shares loaded
    models between runs of one process (see ``ModelCache``).
    """
    cache = cache or ModelCache()
    plan = check_request(request)
    wait_for_everyone()  # every process has checked the folder before the main one claims it
    started = now()
    seed_everything(request.seed)
    loaded = load_inputs(request, plan, cache)
    scorer_for = _scorers(cache, plan)
    calibration = None
    if loaded.target.kind == "causal-lm":
        calibration = choose_prompt_format(request, loaded.data, loaded.target,
                                           loaded.reference, scorer_for, plan.prompt_settings)
    prompt_record = rendered_prompt_format(calibration, loaded.target, loaded.data)
    inputs = hash_inputs(request, plan, loaded)
    check_recorded_retrain(request, plan, loaded.data, inputs, prompt_record)
    return run_in_folder(request, plan, loaded, calibration, prompt_record, inputs, scorer_for,
                         cache, started)


def check_request(request: AuditRequest) -> AuditPlan:
    """Step 1: the flags, the probes and every setting, the kind, the data that does not depend
    on the model, and the output folder; any problem is an ``InputError`` before anything
    loads."""
    if request.fail_on not in SEVERITIES:
        raise InputError(f"--fail-on {request.fail_on}: must be one of {', '.join(SEVERITIES)}")
    if request.resume and request.out is None:
        raise InputError("--resume needs --out: the folder of the interrupted run")
    if request.retrain and request.retrain_results:
        raise InputError("--retrain and --retrain-results: give one (the retrained model, or "
                         "an earlier run holding its measurements)")
    recorded = read_retrain_results(request.retrain_results) if request.retrain_results else None
    probe_classes = select_probes(request.suite, request.probes)
    config = load_config(request.config)
    for name, values in request.settings.items():
        config.setdefault("probes", {}).setdefault(name, {}).update(values)
    for section, name, value in (("scoring", "batch_size", request.batch_size),
                                 ("data", "max_items", request.max_items)):
        if value is not None:  # the command line over the file; recorded with the config
            config.setdefault(section, {})[name] = value
    probes, scoring, selection, prompt_settings = check_settings(
        config, probe_classes, str(request.config or "settings"))
    kind = kind_of(request)
    if selection["max_items"] and kind != "causal-lm":
        raise InputError(f"--max-items {selection['max_items']}: applies to the JSONL audit "
                         "data of an LLM only")
    check_concept_request(request, kind, probes)
    early = load_data(request.data, kind) if request.data and kind in TARGET_KINDS else None
    named = TARGET_KINDS[kind].data_inputs(early) if early is not None else {}
    out = request.out or default_out_dir(request.model)
    check_output_path(out, {**audit_inputs(request), **named},
                      overwrite=request.overwrite or request.resume)
    return AuditPlan(probes=probes, probe_classes=probe_classes, config=config,
                     scoring=scoring, selection=selection, prompt_settings=prompt_settings,
                     kind=kind, device=process_device(resolve_device(request.device)),
                     quiet=request.quiet or not is_main_process(), out=out, early_data=early,
                     recorded=recorded)


def load_inputs(request: AuditRequest, plan: AuditPlan, cache: ModelCache) -> LoadedInputs:
    """Step 2: the judge, the target (of the kind found in step 1), the data read against it
    where it depends on it (and sampled by ``--max-items``), the comparison models, and the
    images of a concept."""
    def load(path: Path | EndpointSpec | None, kind: str | None) -> Target | None:
        if path is None:
            return None
        return cache.target(path, kind, plan.device, request.allow_pickle, request.base,
                            plan.quiet)

    judge = load_concept_judge(request, plan.device)
    target = load(request.model, plan.kind)
    data = plan.early_data
    if data is None and request.data:
        data = load_data(request.data, target.kind, target)
    if plan.selection["max_items"]:
        data = data.sample(plan.selection["max_items"], request.seed)
    concept_images = None
    if request.concept_images:
        from redteam.core.concept_data import load_concept_images
        from redteam.core.diffusion import image_size

        concept_images = load_concept_images(request.concept_images, image_size(target.model))
    # a comparison model may be of another kind (a plain CLIP beside a HySAC model)
    return LoadedInputs(target=target, data=data,
                        reference=load(request.reference, request.kind),
                        retrain=load(request.retrain, request.kind), judge=judge,
                        concept_images=concept_images)


def _scorers(cache: ModelCache, plan: AuditPlan):
    def scorer_for(model: Target) -> CausalLMScorer:
        return cache.scorer(model, plan.scoring["batch_size"], plan.scoring["max_length"],
                            plan.quiet)
    return scorer_for


def hash_inputs(request: AuditRequest, plan: AuditPlan,
                loaded: LoadedInputs) -> dict[str, dict[str, str]]:
    """Step 4: the SHA-256 of every input but the target (whose files are in its own record),
    by label, for the run record and the resume fingerprint."""
    from redteam.core.fileio import hash_tree

    models = (("target", loaded.target), ("reference", loaded.reference),
              ("retrain", loaded.retrain))
    inputs = {label: identity(model) for label, model in models[1:] if model is not None}
    if plan.recorded is not None:
        inputs["retrain"] = plan.recorded.files
        inputs["retrain results"] = {"findings.json": plan.recorded.findings_sha256}
    inputs.update({f"{label} base": model.base_files for label, model in models
                   if model is not None and model.base is not None})
    if request.data:
        inputs["data"] = TARGET_KINDS[loaded.target.kind].hash_data(request.data, loaded.data)
    if loaded.judge is not None:
        inputs["judge"] = loaded.judge.files
    if request.concept_images:
        inputs["concept images"] = hash_tree(request.concept_images)
    return inputs


def identity(model: Target) -> dict[str, str]:
    """What names a model in the record: its files' SHA-256, or for a served model (whose
    weights cannot be seen) the behavioural fingerprint of its answers."""
    if model.served is None:
        return model.files
    return {f"{model.name} (behavioural fingerprint)": str(model.fingerprint.get("sha256"))}


def check_recorded_retrain(request: AuditRequest, plan: AuditPlan, data, inputs: dict,
                           prompt_record: dict) -> None:
    """With ``--retrain-results``: its measurements were taken the same way (data, seed,
    settings, prompt format) as this run's, else bad input."""
    recorded = plan.recorded
    if recorded is None:
        return
    check_retrain_results(recorded, data_sha256=inputs.get("data"),
                          prompt_format=prompt_record, seed=request.seed,
                          settings=measured_with(plan.probes, plan.scoring, plan.selection,
                                                 data),
                          recorded_settings=measured_with(*check_settings(
                              recorded.run.get("config") or {}, plan.probe_classes,
                              recorded.where)[:3], data), probes=plan.probes)


def run_in_folder(request: AuditRequest, plan: AuditPlan, loaded: LoadedInputs,
                  calibration: PromptCalibration | None, prompt_record: dict, inputs: dict,
                  scorer_for, cache: ModelCache, started: str) -> AuditResult:
    """Step 5: open (or resume) the run folder, run the probes and the command's steps, write
    the record, the findings and the reports. Under ``accelerate launch`` the main process
    alone writes the run folder; the others write theirs into a scratch folder that is removed
    (same code path, nothing of theirs is kept)."""
    target, data, out = loaded.target, loaded.data, plan.out
    config_sha256 = hashlib.sha256(json.dumps(plan.config, sort_keys=True).encode()).hexdigest()
    fingerprint = run_fingerprint(target, inputs, config_sha256, request, plan.probes,
                                  calibration)
    finished = resumable_findings(out, fingerprint) if request.resume else {}
    scratch = None if is_main_process() else tempfile.TemporaryDirectory(prefix="redteam-")
    run_dir = out if scratch is None else Path(scratch.name) / "run"
    profile = profile_of(plan.scoring, data)
    try:
        with open_run_folder(run_dir, "audit run", request.suite, target.location,
                             fingerprint, resume=request.resume and scratch is None) as folder:
            template = ProbeContext(
                config={}, seed=request.seed, device=plan.device,
                artifacts_dir=folder.artifacts, quiet=plan.quiet, reference=loaded.reference,
                retrain=loaded.retrain, retrain_results=plan.recorded,
                measurement_memo=cache.measurements, data_key=audit_data_key(data),
                **kind_resources(target, loaded, calibration, request, scorer_for, profile))
            findings, not_applicable = run_probes([*plan.probes, *request.steps], target, data,
                                                  template, folder.events, finished)
            run = run_record(
                target, request.command, request.suite, config=plan.config,
                config_sha256=config_sha256, seed=request.seed, fail_on=request.fail_on,
                device=plan.device, started=started, inputs=inputs,
                probes_skipped=not_applicable,
                data_items=data.counts() if isinstance(data, AuditData) else {},
                prompt_format=prompt_record, processes=process_count(),
                scoring=profile.record() if target.kind == "causal-lm" else {},
                probe_versions=probe_versions([*plan.probes, *request.steps]),
                model_path=request.model if isinstance(request.model, Path) else None)
            exit_code = finish_run(folder, run, findings, request.formats)
        return AuditResult(exit_code=exit_code, out_dir=out, findings=findings)
    except KeyboardInterrupt:
        raise RunInterrupted(out) from None
    except EndpointError as exc:
        raise EndpointError(f"{exc}; the run stopped there, its finished probes are kept in "
                            f"{out} (the same command with --resume finishes it)") from None
    finally:
        if scratch is not None:
            scratch.cleanup()


def kind_resources(target: Target, loaded: LoadedInputs,
                   calibration: PromptCalibration | None, request: AuditRequest, scorer_for,
                   profile: ScoringProfile) -> dict[str, Any]:
    """The resources of the target's kind, as ``ProbeContext`` fields: a causal LM's scorer,
    prompt format and scoring profile; a diffusion pipeline's judge and concept images."""
    if target.kind == "causal-lm":
        return {"lm": LanguageModelResources(
            scorer_for=scorer_for, prompt_calibration=calibration, scoring=profile,
            prompt_format=calibration.chosen if calibration else request.prompt_format)}
    if loaded.judge is not None:
        return {"concept": ConceptResources(judge=loaded.judge, images=loaded.concept_images)}
    return {}


def probe_versions(sources: list[FindingSource]) -> dict[str, int]:
    """Each probe's (or command step's) declared ``version``, for the record."""
    return {source.name: int(getattr(source, "version", 1)) for source in sources}


def run_record(target: Target, command: list[str], suite: str, *, config: dict,
               model_path: Path | None = None, config_sha256: str | None = None,
               **fields: Any) -> RunRecord:
    """The run record of an audit or of a command's prepared run: the tool and library
    versions, the command, the target and its files, the settings and their hash, and
    ``fields`` (seed, device, inputs, ...)."""
    digest = config_sha256 or hashlib.sha256(
        json.dumps(config, sort_keys=True).encode()).hexdigest()
    return RunRecord(
        tool_version=__version__, command=command, suite=suite,
        target={"path": str(model_path or target.location), "name": target.name,
                "kind": target.kind, "files": target.files,
                **({"adapter_base": str(target.base)} if target.base else {}),
                **({"served": {**target.served.record(), "fingerprint": target.fingerprint}}
                   if target.served is not None else {})},
        config=config, config_sha256=digest, libraries=library_versions(), **fields)


FINGERPRINT_NAMES = {"model_sha256": "model", "inputs_sha256": "data or comparison model",
                     "config_sha256": "settings", "probes": "probe selection", "seed": "seed",
                     "prompt_format": "prompt format"}


def run_fingerprint(target: Target, inputs: dict, config_sha256: str, request: AuditRequest,
                    probes: list[Probe], calibration: PromptCalibration | None) -> dict:
    """What must be the same for an interrupted run to be resumed: the model's files, every
    other input's, the settings, the probes, the seed and the prompt format."""
    def digest(value) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()

    return {"model_sha256": digest(identity(target)), "inputs_sha256": digest(inputs),
            "config_sha256": config_sha256, "probes": [p.name for p in probes],
            "seed": request.seed,
            "prompt_format": calibration.chosen.name if calibration else ""}


def resumable_findings(out: Path, fingerprint: dict) -> dict[str, list[Finding]]:
    """The findings of the probes an interrupted run in ``out`` finished, by probe; bad input
    when ``out`` is no such run, is complete, or was started with another model, data,
    settings, probes, seed or prompt format."""
    from redteam.core.untrusted import parse_json, read_jsonl_lines

    events = Path(out) / "events.jsonl"
    if not events.is_file():
        raise InputError(f"{out}: --resume needs the folder of an interrupted run (no "
                         "events.jsonl)")
    if (Path(out) / "findings.json").is_file():
        raise InputError(f"{out}: --resume: that run is complete (findings.json is written)")
    started, finished = None, {}
    for number, line in read_jsonl_lines(events, "event log"):
        event = parse_json(line, f"{events}:{number}")
        if not isinstance(event, dict):
            raise InputError(f"{events}:{number}: expected a JSON object")
        if event.get("event") == "run_start":
            started = event.get("fingerprint")
        elif event.get("event") == "probe_end" and isinstance(event.get("finding"), dict):
            try:
                finding = Finding.from_dict(event["finding"])
            except (TypeError, ValueError, KeyError) as exc:
                raise InputError(f"{events}:{number}: finding: {exc}") from None
            finished.setdefault(finding.probe, []).append(finding)
    if started is None:
        raise InputError(f"{events}: no run_start event with the run's fingerprint")
    for key, value in fingerprint.items():
        if started.get(key) != value:
            raise InputError(f"{out}: --resume: the run was started with another "
                             f"{FINGERPRINT_NAMES[key]}; run it again without --resume")
    return finished


@dataclass
class RunFolder:
    """A run folder being written: its path, its event log and its artifacts folder."""

    path: Path
    events: EventLog
    artifacts: Path


@contextmanager
def open_run_folder(out: Path, what: str, suite: str, target: str,
                    fingerprint: dict | None = None, resume: bool = False) -> Iterator[RunFolder]:
    """Claim ``out`` (checked beforehand by ``check_output_path``), start ``events.jsonl``;
    the ownership marker is sealed on the way out, also after Ctrl-C or SIGTERM, so what was
    written is recorded (``--overwrite`` may replace it later, ``--resume`` continue it).
    Every command that writes a run folder goes through here."""
    if not resume:
        claim_output(out, what)
    try:
        with terminate_as_interrupt():  # SIGTERM seals what was written, as Ctrl-C does
            events = EventLog(out / "events.jsonl")
            events.write("run_resumed" if resume else "run_start", suite=suite, target=target,
                         fingerprint=fingerprint or {})
            artifacts = out / "artifacts"
            artifacts.mkdir(exist_ok=True)
            yield RunFolder(out, events, artifacts)
    finally:
        seal_output(out)


def run_probes(probes: list[FindingSource], target: Target, data, template: ProbeContext,
               events: EventLog, finished: dict[str, list[Finding]] | None = None,
               ) -> tuple[list[Finding], dict[str, str]]:
    """Run ``probes`` in order, each in a copy of ``template`` with its own settings and the
    results of the probes it declares in ``after``; returns the findings and, by name, the
    probes that do not apply to the target's kind (with why). The probes in ``finished`` (a
    resumed run's) are not run again: their findings are taken as they were (what they handed
    off is not kept, so a probe after them computes it again itself)."""
    finished = finished or {}
    findings: list[Finding] = []
    results: dict[str, ProbeResult] = {}  # what each probe that ran hands to later ones
    not_applicable: dict[str, str] = {}
    progress = tqdm(probes, desc="probes", unit="probe", disable=template.quiet)
    for probe in progress:
        progress.set_postfix_str(probe.name)
        if isinstance(probe, Probe) and target.kind not in probe.kinds:
            not_applicable[probe.name] = f"does not apply to kind {target.kind}"
            continue
        if probe.name in finished:
            events.write("probe_reused", probe=probe.name)
            findings.extend(finished[probe.name])
            results[probe.name] = ProbeResult(finished[probe.name])
            continue
        ctx = replace(template, config=probe.config, probe=probe.name, measurements={},
                      results={name: results[name] for name in probe.after if name in results})
        seed_everything(template.seed)
        produced = run_probe(probe, target, data, ctx, events)
        findings.extend(produced)
        results[probe.name] = ProbeResult(produced, ctx.handed_off)
    return findings, not_applicable


def missing_access(probe: FindingSource, target: Target, ctx: ProbeContext) -> str:
    """Why ``probe`` cannot run on a served model (what it uses that the endpoint of the target
    or of a comparison model does not give), or ''."""
    for label, model in (("the target", target), ("the reference model", ctx.reference),
                         ("the retrained model", ctx.retrain)):
        if model is None:
            continue
        lacking = [MODEL_ACCESS[name] for name in probe.model_access
                   if name not in model.access]
        if lacking:
            return (f"needs {' and '.join(lacking)}, which {label}'s endpoint "
                    f"({model.location}, model {model.name}) does not give")
    return ""


def finish_run(folder: RunFolder, run: RunRecord, findings: list[Finding],
               formats: tuple[str, ...] = DEFAULT_FORMATS) -> int:
    """Write ``findings.json`` and the other formats and end the event log; the exit code."""
    exit_code = write_run(folder.path, run, findings, formats)
    folder.events.write("run_end", exit_code=exit_code)
    return exit_code


def build_probes(suite: str, settings: dict[str, dict], where: str = "settings") -> list[Probe]:
    """Every probe of ``suite`` with ``settings`` (probe -> values) checked by value: for the
    commands that prepare their own target and data (``run_prepared``)."""
    probes, *_ = check_settings({"probes": settings}, select_probes(suite, None), where)
    return probes


def run_prepared(probes: list[Probe], target: Target, data, *, out: Path, what: str,
                 seed: int = 0, device: str = "cpu", fail_on: str = "high",
                 quiet: bool = False, command: list[str] | None = None,
                 config: dict | None = None,
                 inputs: dict[str, dict[str, str]] | None = None,
                 formats: tuple[str, ...] = DEFAULT_FORMATS,
                 cache: ModelCache | None = None) -> AuditResult:
    """Run ``probes`` on a target and data a command prepared and checked itself (e.g.
    ``evaluate-protection``'s image folders), into the run folder ``out`` (already checked by
    ``check_output_path``): the same events, crash isolation, record and report as an audit;
    ``cache`` shares the measurement memo between runs of one process."""
    if fail_on not in SEVERITIES:
        raise InputError(f"--fail-on {fail_on}: must be one of {', '.join(SEVERITIES)}")
    config = config or {}
    started = now()
    suite = probes[0].suite if probes else ""
    with open_run_folder(out, what, suite, str(target.path)) as folder:
        template = ProbeContext(config={}, seed=seed, device=device,
                                artifacts_dir=folder.artifacts, quiet=quiet,
                                measurement_memo=(cache or ModelCache()).measurements)
        findings, not_applicable = run_probes(probes, target, data, template, folder.events)
        run = run_record(target, command or list(sys.argv), suite, config=config, seed=seed,
                         fail_on=fail_on, device=device, started=started,
                         inputs=inputs or {}, probes_skipped=not_applicable,
                         probe_versions=probe_versions(probes))
        exit_code = finish_run(folder, run, findings, formats)
    return AuditResult(exit_code=exit_code, out_dir=out, findings=findings)


def choose_prompt_format(request: AuditRequest, data, target: Target, reference: Target | None,
                         scorer_for, settings: dict) -> PromptCalibration:
    """The prompt format of an LLM audit, and whether the model answers in it: ``auto`` picks
    the best candidate on the retain questions, a fixed format is only checked there. Scored
    on the reference model when one is given (it knows the retain facts), else the target."""
    model, label = (reference, "reference") if reference is not None else (target, "target")
    for candidate in format_candidates(request.prompt_format, model.tokenizer,
                                       settings["shots"]):
        candidate.question(model.tokenizer, "Is the template usable?")  # fails as bad input
    return calibrate_prompt_format(request.prompt_format, data if isinstance(data, AuditData)
                                   else None, model, label, scorer_for(model), request.seed,
                                   settings)


def rendered_prompt_format(calibration: PromptCalibration | None, target: Target,
                           data) -> dict:
    """The prompt format of an LLM run with one prompt rendered by it and how it was chosen,
    for the record and the report; rendering it here makes a template that fails bad input
    before the run starts."""
    if calibration is None:
        return {}
    fmt = calibration.chosen
    asked = next((item for item in getattr(data, "items", []) if item.question), None)
    question, answer = (asked.question, asked.answer) if asked else ("What is it?", "It.")
    example = fmt.question(target.tokenizer, question) + fmt.answer(answer)
    return {"name": fmt.name, "system_prompt": fmt.system_prompt or "", "example": example,
            "calibration": calibration.to_record()}


def audit_inputs(request: AuditRequest) -> dict[str, Path | None]:
    """What an audit reads, by label: the run folder may be none of these, nor hold them."""
    def folder(model: Path | EndpointSpec | None) -> Path | None:
        return model if isinstance(model, Path) else None

    return {"model": folder(request.model), "base model": request.base, "data": request.data,
            "reference model": folder(request.reference),
            "retrain model": folder(request.retrain), "retrain results": request.retrain_results,
            "config": request.config, "concept images": request.concept_images,
            "judge": Path(request.judge) if request.judge and request.judge != "nudenet"
            else None,
            "prompt template": Path(request.prompt_format.source)
            if request.prompt_format.source else None,
            **{f"{label}": Path(path) for label, path in request.extra_inputs.items()}}


def write_run(out: Path, run: RunRecord, findings: list[Finding],
              formats: tuple[str, ...] = DEFAULT_FORMATS) -> int:
    """Close ``run`` (exit code, end time), write ``findings.json`` and the other ``formats``
    (``report.html``, SARIF, JUnit) atomically; return the exit code."""
    from reports.html import write_report
    from reports.machine import write_machine_formats

    run.exit_code = exit_code_for(findings, run.fail_on)
    run.finished = now()
    document = findings_document(run, findings)
    atomic_write_json(out / "findings.json", document)
    if "html" in formats:
        write_report(out, document)
    write_machine_formats(out, document, formats)
    return run.exit_code
