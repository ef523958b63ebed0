"""The ``redteam`` command line. Commands only parse arguments and call importable functions.

Exit codes (docs/reference/exit-codes.md): 0 no finding at or above --fail-on, 1 such
findings, 2 bad usage or bad input (one line, no traceback), 3 no probe applied to the target.
"""

from __future__ import annotations

import errno
import math
import os
import sys
from pathlib import Path

import click

from redteam import __version__
from redteam.commands import data_import as benchmarks  # light: no torch, read at import
from redteam.core.errors import InputError
from redteam.core.findings import SEVERITIES

EXISTING = click.Path(path_type=Path)
SEED = click.IntRange(0, 2**32 - 1)  # what numpy and torch accept
AT_LEAST_ONE = click.IntRange(min=1)


class FiniteFloat(click.FloatRange):
    """A float in a range that must also be finite: Click's ranges let NaN through (it compares
    false with every bound) and inf past an open upper end, and a training run on either
    writes a model of NaN weights."""

    name = "finite float"

    def convert(self, value, param, ctx) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


POSITIVE = FiniteFloat(min=0, min_open=True)
NON_NEGATIVE = FiniteFloat(min=0)
FRACTION = FiniteFloat(0, 1, min_open=True, max_open=True)
FINITE = FiniteFloat()


class Interrupted(Exception):
    """Ctrl-C inside a command (raised past Click, which would print a blank line first);
    ``out`` is the run folder that can be resumed, when there is one."""

    def __init__(self, out=None) -> None:
        super().__init__()
        self.out = out


class LazyChoice(click.Choice):
    """A choice among names that live with their code (``load`` returns them), read only when
    the command parses or shows the option: importing that code imports torch (seconds)."""

    def __init__(self, load) -> None:
        self.case_sensitive = True
        self._load = load

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._load())


def _unlearning_methods() -> tuple[str, ...]:
    from defenses.unlearning import METHODS

    return tuple(METHODS)


def _protection_methods() -> tuple[str, ...]:
    from redteam.commands.protect import METHODS

    return METHODS


def _repair_methods() -> tuple[str, ...]:
    from redteam.commands.expose import REPAIR_METHODS

    return REPAIR_METHODS


# The options several commands share, one definition each: ``@common_options("device", ...)``.
COMMON_OPTIONS = {
    "out": click.option("--out", type=EXISTING,
                        help="Run folder [default: redteam-runs/<model>-<UTC time>]."),
    "device": click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
                           default="auto", show_default=True,
                           help="Where models run: auto takes CUDA when there is one."),
    "seed": click.option("--seed", type=SEED, default=0, show_default=True),
    "fail-on": click.option("--fail-on", type=click.Choice(SEVERITIES), default="high",
                            show_default=True,
                            help="Exit 1 when a finding reaches this severity."),
    "allow-pickle": click.option("--allow-pickle", is_flag=True,
                                 help="Accept pickle weights, loaded with "
                                      "torch.load(weights_only=True)."),
    "overwrite": click.option("--overwrite", is_flag=True,
                              help="Replace an earlier output of redteam in --out (only one it "
                                   "wrote, unchanged since)."),
    "quiet": click.option("--quiet", is_flag=True, help="No progress bars."),
    "format": click.option("--format", "formats", default="html,json", show_default=True,
                           callback=lambda ctx, param, value: _formats(value),
                           help="What the run folder holds, comma-separated: html "
                                "(report.html), json (findings.json, always written), sarif "
                                "(findings.sarif), junit (junit.xml)."),
}


def _formats(value: str) -> tuple[str, ...]:
    from reports.machine import parse_formats

    try:
        return parse_formats(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--format") from None


def common_options(*names: str):
    """Decorate a command with the shared options ``names``, in that order."""
    def decorate(command):
        for name in reversed(names):
            command = COMMON_OPTIONS[name](command)
        return command
    return decorate


class _Commands(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise Interrupted(getattr(exc, "out", None)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="redteam")
def cli() -> None:
    """Red-team ML models for safety and robustness; write HTML risk reports.

    \b
    Example:
      redteam audit ./unlearned-llm --suite unlearning --data audit.jsonl \\
          --reference ./original --retrain ./gold --out runs/x
    """


@cli.command("list")
@click.option("--suite", help="Only the probes of this suite.")
def list_probes(suite: str | None) -> None:
    """List every probe with its suite, target kinds and reference.

    \b
    Example:
      redteam list --suite unlearning
    """
    from redteam.probes import REGISTRY, load_plugins, suites

    load_plugins()
    known = suites()
    if suite is not None and suite not in known:
        raise InputError(f"--suite {suite}: unknown suite (known: {', '.join(known)})")
    for name, members in known.items():
        if suite is not None and name != suite:
            continue
        click.echo(f"{name} ({len(members)} probes)")
        for probe_name in members:
            info = REGISTRY[probe_name].describe()
            needs = "; ".join(f"{split}: {', '.join(f) or 'any items'}"
                              for split, f in info["needs"].items())
            click.echo(f"  {probe_name:36} kinds: {', '.join(info['kinds'])}")
            click.echo(f"  {'':36} goal: {info['goal']}")
            needs = needs or info["data"] or "-"
            click.echo(f"  {'':36} needs: {needs}; ref: {'; '.join(info['references'])}")
            for setting, accepts in info["settings"].items():
                click.echo(f"  {'':36} {setting} = {info['defaults'][setting]!r} ({accepts})")
            if info["severity_rule"]:
                click.echo(f"  {'':36} severity rule: {info['severity_rule']}")


def prompt_format_options(command):
    """``--prompt-format``, ``--shots`` and ``--system-prompt``: how the LLM path asks (audit)
    and trains (unlearn), one definition for both."""
    for option in reversed([
        click.option("--prompt-format", default="auto", show_default=True,
                     help="How LLM probes ask: auto (the format the model answers its retain "
                          "questions best in), plain (Question:/Answer:), chat (the "
                          "tokenizer's chat template), or a Jinja template FILE."),
        click.option("--shots", type=click.IntRange(min=0),
                     help="Few-shot examples per question [default: each probe's setting]."),
        click.option("--system-prompt", help="System message of the chat or template format."),
    ]):
        command = option(command)
    return command


def concept_options(command):
    """The options of a concept-erasure audit of a diffusion pipeline (``--suite concept``)."""
    for option in reversed([
        click.option("--prompts", type=EXISTING,
                     help="Diffusion pipelines: prompts, one per line, or a CSV with columns "
                          "prompt, evaluation_seed, evaluation_guidance."),
        click.option("--judge", help="Diffusion pipelines: what judges an image, an "
                     "image-classifier folder (with --concept-label) or nudenet."),
        click.option("--concept-label", help="The judge classifier's label (name or id) of "
                     "the concept."),
        click.option("--judge-top-k", type=AT_LEAST_ONE, default=1, show_default=True,
                     help="The concept is shown when its label is among the judge's top k."),
        click.option("--concept-images", type=EXISTING,
                     help="Images of the concept the attack aims at [default: generated by "
                          "--reference from each prompt and seed]."),
    ]):
        command = option(command)
    return command


@cli.command()
@click.argument("model", type=EXISTING)
@click.option("--suite", required=True, help="Suite to run (see `redteam list`).")
@click.option("--data", type=EXISTING,
              help="Audit data: JSONL for LLMs, a folder of class sub-folders of images for "
                   "image classifiers, labelled-text JSONL for text classifiers, ViSU "
                   "quadruplet JSONL for CLIP/HySAC (see docs/data-formats.md).")
@click.option("--reference", type=EXISTING,
              help="The original model: before unlearning, the base CLIP of a HySAC, or the "
                   "pipeline before concept erasure.")
@click.option("--retrain", type=EXISTING, help="Gold model retrained without the forget set.")
@concept_options
@click.option("--retrain-results", type=EXISTING,
              help="Instead of --retrain: an earlier run folder of (or with) the gold model; "
                   "its measurements are re-used (same data, prompt format and settings, else "
                   "exit 2).")
@click.option("--base", type=EXISTING,
              help="Base model of a PEFT (LoRA) adapter given as MODEL, --reference or "
                   "--retrain [default: the local folder the adapter's config names].")
@common_options("out")
@click.option("--probe", "probes", multiple=True, help="Run only this probe (repeatable).")
@click.option("--max-items", type=AT_LEAST_ONE,
              help="A quick audit: at most N items of each split (seeded, stratified by "
                   "subject) [default: all].")
@click.option("--batch-size", type=AT_LEAST_ONE,
              help="Batch of scoring and generation [default: the config's, else 16].")
@prompt_format_options
@click.option("--config", type=EXISTING, help="audit.toml with per-probe thresholds.")
@click.option("--kind", help="Force the target kind instead of detecting it.")
@click.option("--resume", is_flag=True,
              help="Finish the interrupted run in --out: its finished probes are re-used (same "
                   "model, data, settings and prompt format, else exit 2).")
@common_options("device", "seed", "fail-on", "allow-pickle", "overwrite", "quiet", "format")
def audit(model: Path, suite: str, data, reference, retrain, prompts, judge, concept_label,
          judge_top_k, concept_images, retrain_results, base, out, probes, max_items,
          batch_size, prompt_format, shots, system_prompt, device, seed, fail_on, config, kind,
          resume, allow_pickle, overwrite, quiet, formats) -> None:
    """Audit MODEL with a suite of probes and write an HTML risk report.

    \b
    Example:
      redteam audit ./my-unlearned-llm --suite unlearning --data audit.jsonl \\
          --reference ./original --retrain ./gold --out runs/x
      redteam audit ./erased-pipeline --suite concept --prompts prompts.txt \\
          --judge ./classifier --concept-label 3 --reference ./original
    """
    from redteam.core.prompts import load_prompt_format
    from redteam.engine import AuditRequest, run_audit

    if prompts and data:
        raise InputError("--prompts and --data: give one (--prompts is the data of a "
                         "diffusion pipeline)")
    result = run_audit(AuditRequest(
        judge=judge, concept_label=concept_label, judge_top_k=judge_top_k,
        concept_images=concept_images, data=data or prompts,
        prompt_format=load_prompt_format(prompt_format, shots, system_prompt),
        model=model, suite=suite, reference=reference, retrain=retrain, out=out,
        retrain_results=retrain_results,
        probes=list(probes) or None, device=device, seed=seed, fail_on=fail_on, config=config,
        kind=kind, base=base, max_items=max_items, batch_size=batch_size,
        allow_pickle=allow_pickle, overwrite=overwrite, quiet=quiet, formats=formats,
        resume=resume, command=["redteam", *sys.argv[1:]],
    ))
    _print_run_and_exit(result)


@cli.command()
@click.argument("model", type=EXISTING)
@click.option("--clean-data", required=True, type=EXISTING,
              help="A few hundred clean inputs you trust: images (one sub-folder per class), "
                   "or labelled-text JSONL for a text classifier.")
@click.option("--test-data", type=EXISTING,
              help="Clean test data (same format) for accuracy after removal.")
@click.option("--poisoned-data", type=EXISTING,
              help="Test inputs carrying the trigger at their true labels: images in the "
                   "folder of their true class, or labelled texts (attack success before and "
                   "after removal).")
@click.option("--trigger", help="The true trigger, if known: a PNG (black elsewhere) for an "
              "image classifier, shown beside the recovered one with their overlap; the "
              "trigger word(s) for a text classifier, with the rank the search found it at.")
@common_options("out")
@click.option("--remove", "repaired", type=EXISTING,
              help="Also remove the backdoor and write the repaired model to this new folder.")
@click.option("--remove-method", type=LazyChoice(_repair_methods), default="auto",
              show_default=True,
              help="auto: unlearn the recovered trigger when one was found for the backdoor "
                   "label, else prune its neurons (RNP, image classifiers).")
@click.option("--config", type=EXISTING,
              help="audit.toml with per-probe settings, e.g. the trigger search's budget: "
                   "[probes.\"backdoor.trigger_words\"] candidates = 300.")
@common_options("device", "seed", "fail-on", "allow-pickle", "overwrite", "quiet", "format")
def expose(model: Path, clean_data, test_data, poisoned_data, trigger, out, repaired,
           remove_method, config, device, seed, fail_on, allow_pickle, overwrite, quiet,
           formats) -> None:
    """Expose (and optionally remove) a backdoor in an image or text classifier (EBYD).

    Exit code 1 when a backdoor is found.

    \b
    Example:
      redteam expose ./vendor-model --clean-data clean/ --poisoned-data poisoned/ \\
          --out runs/vendor --remove ./vendor-model-repaired
    """
    from redteam.commands.expose import expose_model

    result = expose_model(model, clean_data, test_data=test_data, poisoned_data=poisoned_data,
                          trigger=trigger, out=out, repaired=repaired, device=device, seed=seed,
                          fail_on=fail_on, overwrite=overwrite, allow_pickle=allow_pickle,
                          quiet=quiet, command=["redteam", *sys.argv[1:]],
                          repair_settings={"method": remove_method}, formats=formats,
                          config=config)
    _print_run_and_exit(result)


class _ReportCommands(click.Group):
    """``redteam report RUN_DIR`` renders a run (the hidden ``render``); ``redteam report diff A
    B`` compares two."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["render", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=_ReportCommands)
def report() -> None:
    """Write a run's report again (and SARIF, JUnit), or compare two runs.

    \b
    Examples:
      redteam report runs/x --format html,sarif,junit
      redteam report diff runs/before runs/after --out diff.html
    """


@report.command("render", hidden=True)
@click.argument("run_dir", type=EXISTING)
@click.option("--format", "formats", default="html", show_default=True,
              callback=lambda ctx, param, value: _formats(value),
              help="What to write from findings.json, comma-separated: html, sarif, junit.")
def report_render(run_dir: Path, formats: tuple[str, ...]) -> None:
    """Write RUN_DIR/report.html (and SARIF, JUnit) again from RUN_DIR/findings.json.

    \b
    Example:
      redteam report runs/x --format html,sarif,junit
    """
    from redteam.core.outputs import check_replace, record_rewritten
    from reports.html import load_document, write_report
    from reports.machine import FILES, write_machine_formats

    document = load_document(run_dir)
    check_replace(run_dir, [FILES[name] for name in formats if name != "json"])
    names = [write_report(run_dir).name] if "html" in formats else []
    names += write_machine_formats(run_dir, document, formats)
    record_rewritten(run_dir, *names)  # so that --overwrite may still replace the run
    for name in names:
        click.echo(Path(run_dir) / name)


@report.command("diff")
@click.argument("run_a", type=EXISTING)
@click.argument("run_b", type=EXISTING)
@click.option("--out", type=EXISTING, help="The HTML page to write (its JSON form beside it) "
              "[default: none, the changes are printed].")
@click.option("--fail-on", type=click.Choice(SEVERITIES), default="high", show_default=True,
              help="Exit 1 when a new failure reaches this severity.")
def report_diff(run_a: Path, run_b: Path, out: Path | None, fail_on: str) -> None:
    """Compare two runs of the same audit (same suite, data and probe settings; the model may
    differ): new failures, fixed, metric deltas with both runs' intervals.

    Exit code 1 when a new failure at or above --fail-on appears.
    """
    from redteam.core.outputs import check_new_file
    from reports.diff import diff_documents, diff_files, new_failures_at, write_diff
    from reports.html import load_document

    if out is not None:
        page, data = diff_files(out)
        check_new_file(page, [("run folder", run_a), ("run folder", run_b)],
                       companions=[data])
    diff = diff_documents(load_document(run_a), load_document(run_b), f"{run_a} vs {run_b}")
    for row in diff["rows"]:
        if row["change"] != "unchanged":
            before = row["a"]["status"] if row["a"] else "absent"
            after = row["b"]["status"] if row["b"] else "absent"
            delta = f" ({row['metric']}: {row['value_a']} -> {row['value_b']})" \
                if row["delta"] is not None else ""
            click.echo(f"{row['change']:12} {row['probe']}: {before} -> {after}{delta}")
    counts = diff["counts"]
    click.echo(f"{counts['new failure']} new failures, {counts['fixed']} fixed, "
               f"{counts['changed']} changed, {counts['unchanged']} unchanged")
    if out is not None:
        click.echo(f"diff: {write_diff(diff, out)}")
    sys.exit(1 if new_failures_at(diff, fail_on) else 0)


@cli.command()
@click.argument("model", type=EXISTING)
@click.option("--method", required=True, type=LazyChoice(_unlearning_methods),
              help="GA, GradDiff, NPO, SimNPO, or SalUn's saliency mask on GradDiff / NPO.")
@click.option("--data", required=True, type=EXISTING, help="Audit JSONL (forget/retain items).")
@click.option("--out", required=True, type=EXISTING, help="New folder for the unlearned model.")
@click.option("--epochs", type=AT_LEAST_ONE, default=5, show_default=True)
@click.option("--lr", type=POSITIVE, default=1e-4, show_default=True)
@click.option("--batch-size", type=AT_LEAST_ONE, default=8, show_default=True)
@click.option("--beta", type=POSITIVE,
              help="Inverse temperature of NPO / SimNPO [default: 0.1 / 4.5].")
@click.option("--delta", type=FINITE, help="SimNPO's margin on the mean token NLL [default: 0].")
@click.option("--saliency", type=FiniteFloat(0, 1, min_open=True),
              help="SalUn: fraction of the weights (most salient) allowed to change "
                   "[default: 0.5].")
@prompt_format_options
@common_options("seed", "device", "allow-pickle", "quiet")
def unlearn(model: Path, method: str, data: Path, out: Path, epochs: int, lr: float,
            batch_size: int, beta: float | None, delta: float | None, saliency: float | None,
            prompt_format: str, shots: int | None, system_prompt: str | None, seed: int,
            device: str, allow_pickle: bool, quiet: bool) -> None:
    """Unlearn the forget items of DATA from MODEL; write the result to OUT.

    Questions are trained in the prompt format the model will be audited in (auto: the one it
    answers its retain questions best in).

    \b
    Example:
      redteam unlearn ./original --method npo --data audit.jsonl --out ./original-npo
    """
    import json

    from redteam.commands.unlearn import unlearn_model
    from redteam.core.prompts import load_prompt_format

    path = unlearn_model(model, method=method, data=data, out=out, epochs=epochs, lr=lr,
                         batch_size=batch_size, beta=beta, delta=delta, saliency=saliency,
                         prompt_format=load_prompt_format(prompt_format, shots, system_prompt),
                         seed=seed, device=device, allow_pickle=allow_pickle, quiet=quiet)
    click.echo(f"unlearned model ({method}, prompt format "
               f"{json.loads((path / 'unlearning.json').read_text())['prompt_format']}): {path}")


@cli.command()
@click.argument("pipeline", type=EXISTING)
@click.option("--concept", required=True, help="The concept to erase, as a prompt names it.")
@click.option("--method", type=click.Choice(["esd-x", "esd-u"]), default="esd-x",
              show_default=True,
              help="esd-x: train the cross-attention layers (a style, an artist); esd-u: the "
                   "other layers (a global concept: nudity, an object).")
@click.option("--out", required=True, type=EXISTING, help="New folder for the erased pipeline.")
@click.option("--iterations", type=AT_LEAST_ONE, default=1000, show_default=True)
@click.option("--lr", type=POSITIVE, default=1e-5, show_default=True)
@click.option("--eta", type=POSITIVE, default=1.0, show_default=True,
              help="Strength of the negative guidance the concept is pushed along.")
@click.option("--sample-steps", type=AT_LEAST_ONE, default=50, show_default=True,
              help="DDIM steps of the schedule the training latents are sampled on.")
@common_options("seed", "device", "allow-pickle", "overwrite", "quiet")
def erase(pipeline: Path, concept: str, method: str, out: Path, iterations: int, lr: float,
          eta: float, sample_steps: int, seed: int, device: str, allow_pickle: bool,
          overwrite: bool, quiet: bool) -> None:
    """Erase a concept from a diffusion PIPELINE with ESD; write the erased pipeline to OUT.

    \b
    Example:
      redteam erase ./sd-pipeline --concept "nudity" --method esd-u --out ./sd-esd-u
    """
    from redteam.commands.erase import erase_concept

    path = erase_concept(pipeline, concept, out, method=method, iterations=iterations, lr=lr,
                         eta=eta, sample_steps=sample_steps, seed=seed, device=device,
                         allow_pickle=allow_pickle, overwrite=overwrite, quiet=quiet)
    click.echo(f"erased pipeline ({method}, concept {concept.strip()!r}): {path}")


@cli.command()
@click.argument("data_dir", type=EXISTING)
@click.option("--out", required=True, type=EXISTING,
              help="New folder for the protected copy (same layout and formats).")
@click.option("--method", type=LazyChoice(_protection_methods), default="auto",
              show_default=True,
              help="auto: Unlearnable Clusters with --surrogate, error-minimising noise on "
                   "label-free clusters without one.")
@click.option("--surrogate", type=EXISTING,
              help="Image classifier or CLIP model folder whose features define the clusters "
                   "(Unlearnable Clusters).")
@click.option("--clusters", type=click.IntRange(min=2), default=10, show_default=True,
              help="k of k-means: images of one cluster share one perturbation.")
@click.option("--epsilon", default="8/255", show_default=True,
              help="L∞ bound of every change, as 8/255 or 0.031.")
@click.option("--epochs", type=AT_LEAST_ONE, default=50, show_default=True,
              help="Training epochs of each cluster's perturbation generator (Unlearnable "
                   "Clusters).")
@common_options("seed", "device", "allow-pickle", "overwrite", "quiet")
def protect(data_dir: Path, out: Path, method, surrogate, clusters, epsilon, epochs, seed, device,
            allow_pickle, overwrite, quiet) -> None:
    """Write an unlearnable copy of the images in DATA_DIR.

    DATA_DIR holds images in class sub-folders or flat; labels are not needed. OUT gets the
    same files, each changed by at most --epsilon, and protection.json (parameters, cluster,
    SHA-256 and measured L∞/L2 of every image). DATA_DIR is never written to.

    \b
    Example:
      redteam protect photos/ --out protected/
      redteam protect photos/ --out protected/ --surrogate ./my-classifier
    """
    from redteam.commands.protect import protect_folder

    manifest = protect_folder(data_dir, out, method=method, surrogate=surrogate,
                              clusters=clusters, epsilon=epsilon, epochs=epochs, seed=seed,
                              device=device, allow_pickle=allow_pickle, overwrite=overwrite,
                              quiet=quiet,
                              command=["redteam", *sys.argv[1:]])
    summary, parameters = manifest["summary"], manifest["parameters"]
    click.echo(f"protected {summary['images']} images into {out} ({manifest['method']}, "
               f"{parameters['clusters']} clusters, epsilon {parameters['epsilon_given']}; "
               f"largest change {summary['max_linf']:.4f}); manifest: {out / 'protection.json'}")
    if not summary["all_within_epsilon"]:
        click.echo(f"warning: {len(summary['outside_epsilon'])} lossy (JPEG) outputs exceed "
                   f"epsilon after compression, e.g. {summary['outside_epsilon'][0]}", err=True)


@cli.command("evaluate-protection")
@click.argument("clean_dir", type=EXISTING)
@click.argument("protected_dir", type=EXISTING)
@click.option("--test-data", required=True, type=EXISTING,
              help="Clean test images, one sub-folder per class (as in CLEAN_DIR).")
@common_options("out")
@click.option("--learner", type=click.Choice(["convnext", "resnet", "vit"]),
              help="Architecture trained on each folder [default: one that differs from the "
                   "surrogate's].")
@click.option("--groups", help='Coarser labelling, e.g. "0,1,2,3,4;5,6,7,8,9" [default: '
              "consecutive pairs of the sorted classes].")
@click.option("--epochs", type=AT_LEAST_ONE, default=15, show_default=True)
@click.option("--image-size", type=click.IntRange(8, 1024),
              help="Training resolution [default: the manifest's].")
@click.option("--epsilon", help="The bound to check when PROTECTED_DIR has no manifest "
              "[default: 8/255].")
@common_options("seed", "device", "fail-on", "overwrite", "quiet", "format")
def evaluate_protection(clean_dir: Path, protected_dir: Path, test_data, out, learner, groups,
                        epochs, image_size, epsilon, seed, device, fail_on, overwrite,
                        quiet, formats) -> None:
    """Train on CLEAN_DIR and on PROTECTED_DIR, test both on --test-data; write a report.

    Exit code 1 when the protected images still teach the task (or exceed epsilon).

    \b
    Example:
      redteam evaluate-protection photos/ protected/ --test-data test/ --out runs/uc
    """
    from redteam.commands.evaluate_protection import evaluate_protection as evaluate

    result = evaluate(clean_dir, protected_dir, test_data, out=out, learner=learner,
                      groups=groups, epochs=epochs, image_size=image_size, epsilon=epsilon,
                      seed=seed, device=device, fail_on=fail_on, overwrite=overwrite,
                      quiet=quiet, command=["redteam", *sys.argv[1:]], formats=formats)
    _print_run_and_exit(result)


@cli.group()
def data() -> None:
    """Bring a standard benchmark in as audit data, or check an audit JSONL.

    \b
    Example:
      redteam data import tofu ./TOFU --forget forget10 --out tofu-forget10.jsonl
      redteam data validate tofu-forget10.jsonl
    """


@data.command("import")
@click.argument("benchmark", type=click.Choice(benchmarks.BENCHMARKS))
@click.argument("source", type=EXISTING)
@click.option("--out", required=True, type=EXISTING, help="The audit JSONL to write (new file).")
@click.option("--forget", default="forget10", show_default=True,
              type=click.Choice(benchmarks.TOFU_FORGET), help="TOFU's forget split.")
@click.option("--corpus", default="news", show_default=True,
              type=click.Choice(benchmarks.MUSE_CORPORA), help="Which MUSE corpus SOURCE holds.")
@click.option("--target", "targets", multiple=True,
              help="RWKU: only this target (repeatable) [default: all].")
@click.option("--subset", default="bio", show_default=True,
              type=click.Choice(benchmarks.WMDP_SUBSETS), help="WMDP's subset.")
def data_import(benchmark: str, source: Path, out: Path, forget: str, corpus: str,
                targets: tuple[str, ...], subset: str) -> None:
    """Convert SOURCE, a benchmark folder as downloaded (JSON, JSON lines or parquet files under
    their own names), into an audit JSONL. Nothing is fetched and SOURCE is only read.

    \b
    Example:
      redteam data import rwku ./RWKU --target "Stephen King" --out rwku-king.jsonl
    """
    options = {"tofu": {"forget": forget}, "muse": {"corpus": corpus},
               "rwku": {"targets": targets}, "wmdp": {"subset": subset}}[benchmark]
    written = benchmarks.import_benchmark(benchmark, source, out, **options)
    _print_counts(benchmarks.field_counts(written))
    click.echo(f"audit data: {out}")


@data.command("validate")
@click.argument("file", type=EXISTING)
def data_validate(file: Path) -> None:
    """Check an audit JSONL line by line and print its items per split and field.

    \b
    Example:
      redteam data validate audit.jsonl
    """
    from redteam.core.data import load_audit_jsonl

    _print_counts(benchmarks.field_counts(load_audit_jsonl(file)))
    click.echo(f"{file}: valid audit data")


def _print_counts(counts: dict[str, dict[str, int]]) -> None:
    for split, fields in counts.items():
        others = ", ".join(f"{name} {n}" for name, n in fields.items() if name != "items")
        click.echo(f"{split}: {fields['items']} items ({others})")


@cli.group()
def guard() -> None:
    """Train a prompt guard that flags prompts about the forget subjects, and check prompts.

    The guard (ECO prompts, O3) is a text classifier on the frozen all-MiniLM-L6-v2 encoder; it
    can itself be audited with `redteam audit GUARD --suite adversarial`.
    """


@guard.command("train")
@click.option("--data", required=True, type=EXISTING, help="Audit JSONL (forget/retain items).")
@click.option("--out", required=True, type=EXISTING,
              help="New folder for the guard (neither the data file nor a folder holding it).")
@common_options("seed", "quiet")
def guard_train(data: Path, out: Path, seed: int, quiet: bool) -> None:
    """Train a guard on DATA's forget (flag) and retain (allow) prompts; write it to OUT.

    Prints the held-out figures (cross-validated, and on RWKU rewrites), also in OUT/guard.json.

    \b
    Example:
      redteam guard train --data audit.jsonl --out ./guard
    """
    from redteam.commands.guard import train_guard_command

    record = train_guard_command(data, out, seed=seed, quiet=quiet)
    figures = record["evaluation"]

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    click.echo(f"held out ({figures['folds']}-fold, by item within subject): detection "
               f"{show(figures['cv_detection_rate'])}, false positives "
               f"{show(figures['cv_false_positive_rate'])}")
    per_type = ", ".join(f"{name} {show(row['flag_rate'])}" for name, row
                         in figures["forget_rewrites"]["by_source"].items())
    click.echo(f"RWKU rewrites of forget questions: detection "
               f"{show(figures['rewrite_detection_rate'])} ({per_type or 'none'})")
    click.echo(f"rewrites of retain questions: false positives "
               f"{show(figures['retain_rewrite_false_positive_rate'])}; prompts about unseen "
               f"(holdout) subjects: false positives "
               f"{show(figures['holdout_false_positive_rate'])}")
    click.echo(f"guard: {out} (details: {out / 'guard.json'})")


@guard.command("check")
@click.argument("guard_dir", type=EXISTING)
@click.argument("prompts", nargs=-1, required=True)
def guard_check(guard_dir: Path, prompts: tuple[str, ...]) -> None:
    """Check PROMPTS with the guard in GUARD_DIR: one line each (FLAG/allow, P(flag), prompt).

    Exit code 1 when any prompt is flagged, 0 otherwise.

    \b
    Example:
      redteam guard check ./guard "Where was Elara Voss born?"
    """
    from redteam.commands.guard import check_prompts

    results = check_prompts(guard_dir, list(prompts))
    for row in results:
        label = "FLAG " if row["label"] == "flag" else "allow"
        click.echo(f"{label} {row['flag_probability']:.3f} {row['prompt']}")
    sys.exit(1 if any(row["label"] == "flag" for row in results) else 0)


@cli.group()
def hysac() -> None:
    """Train a hyperbolic safety-aware CLIP (HySAC) and use it: classify, retrieve, evaluate.

    Data is a JSONL of ViSU quadruplets: {"safe_image", "unsafe_image", "safe_caption",
    "unsafe_caption"}, image paths relative to the file.
    """


@hysac.command("train")
@click.argument("data", type=EXISTING)
@click.option("--base", required=True, type=EXISTING, help="The CLIP model folder to fine-tune.")
@click.option("--out", required=True, type=EXISTING, help="New folder for the HySAC model.")
@click.option("--epochs", type=AT_LEAST_ONE, default=20, show_default=True,
              help="At most this many epochs (early stopping on the validation loss).")
@click.option("--lr", type=POSITIVE, default=1e-4, show_default=True)
@click.option("--batch-size", type=AT_LEAST_ONE, default=32, show_default=True)
@click.option("--weight-decay", type=NON_NEGATIVE, default=0.2, show_default=True)
@click.option("--val-fraction", type=FRACTION, default=0.2, show_default=True)
@click.option("--patience", type=AT_LEAST_ONE, default=3, show_default=True,
              help="Stop after this many epochs without a better validation loss.")
@click.option("--entailment-weight", type=NON_NEGATIVE, default=0.2, show_default=True,
              help="Weight of the entailment-cone terms (MERU's 0.2).")
@click.option("--lora-rank", type=click.IntRange(min=0), default=0, show_default=True,
              help="Train LoRA adapters of this rank (HySAC: 16) instead of every weight.")
@click.option("--curvature", type=POSITIVE, default=1.0, show_default=True,
              help="Initial curvature c (learnt, within [c/10, 10c]).")
@common_options("device", "seed", "allow-pickle", "quiet")
def hysac_train(data: Path, base: Path, out: Path, epochs: int, lr: float, batch_size: int,
                weight_decay: float, val_fraction: float, patience: int,
                entailment_weight: float, lora_rank: int, curvature: float, device: str,
                seed: int, allow_pickle: bool, quiet: bool) -> None:
    """Fine-tune the CLIP in --base into a HySAC model on the quadruplets of DATA.

    OUT is a CLIP folder (safetensors) plus hysac_config.json (curvature, scales, safety
    radius), which redteam detects as kind hysac, and hysac_training.json (history, hashes).

    \b
    Example:
      redteam hysac train visu-train.jsonl --base ./clip-vit-b32 --out ./hysac --lora-rank 16
    """
    from redteam.commands.hysac import train_hysac_folder

    record = train_hysac_folder(
        data, base, out, epochs=epochs, lr=lr, batch_size=batch_size,
        weight_decay=weight_decay, val_fraction=val_fraction, patience=patience,
        entailment_weight=entailment_weight, lora_rank=lora_rank, curvature=curvature,
        seed=seed, device=device, allow_pickle=allow_pickle, quiet=quiet)
    click.echo(f"trained on {record['train']} quadruplets, validated on {record['validation']}: "
               f"{record['epochs_run']} epochs, best validation loss {record['best_val_loss']}, "
               f"{record['samples_per_s']} quadruplets/s")
    click.echo(f"safety radius {record['safety_radius']:.4f} (95th percentile of the safe "
               f"training embeddings' distances to the origin)")
    click.echo(f"HySAC model: {out}")


@hysac.command("evaluate")
@click.argument("model", type=EXISTING)
@click.argument("data", type=EXISTING)
@click.option("--reference", type=EXISTING, help="The base CLIP, measured side by side.")
@common_options("out", "device", "fail-on", "allow-pickle", "overwrite", "quiet", "format")
def hysac_evaluate(model: Path, data: Path, reference, out, device, fail_on, allow_pickle,
                   overwrite, quiet, formats) -> None:
    """Run the safety suite on MODEL (a HySAC or a plain CLIP) with held-out quadruplets.

    The same as `redteam audit MODEL --suite safety --data DATA`.

    \b
    Example:
      redteam hysac evaluate ./hysac visu-test.jsonl --reference ./clip-vit-b32
    """
    from redteam.commands.hysac import evaluate

    result = evaluate(model, data, reference=reference, out=out, device=device,
                      fail_on=fail_on, allow_pickle=allow_pickle, overwrite=overwrite,
                      quiet=quiet, formats=formats, command=["redteam", *sys.argv[1:]])
    _print_run_and_exit(result)


@hysac.command("classify")
@click.argument("model", type=EXISTING)
@click.option("--text", "texts", multiple=True, help="A caption to classify (repeatable).")
@click.option("--image", "images", multiple=True, type=EXISTING,
              help="An image file to classify (repeatable).")
def hysac_classify(model: Path, texts: tuple[str, ...], images: tuple[Path, ...]) -> None:
    """Classify captions and images as safe or unsafe by their distance from the origin.

    One line each: UNSAFE/safe, radius, the bound, the input. Exit code 1 when anything is
    unsafe.

    \b
    Example:
      redteam hysac classify ./hysac --text "a photo of a knife fight" --image photo.jpg
    """
    from redteam.commands.hysac import classify

    if not texts and not images:
        raise click.UsageError("give at least one --text or --image")
    for image in images:
        if not image.is_file():
            raise InputError(f"{image}: image not found")
    results = classify(model, list(texts), list(images))
    for row in results:
        label = "UNSAFE" if row["unsafe"] else "safe  "
        click.echo(f"{label} {row['radius']:.4f} (bound {row['bound']:.4f}) {row['modality']}: "
                   f"{row['input']}")
    sys.exit(1 if any(row["unsafe"] for row in results) else 0)


@hysac.command("retrieve")
@click.argument("model", type=EXISTING)
@click.option("--query", required=True, help="The caption to search with.")
@click.option("--gallery", required=True, type=EXISTING, help="A folder of images to search.")
@click.option("--traverse", is_flag=True,
              help="Move an unsafe query back to the safety radius first (HySAC only).")
@click.option("-k", "--top", "k", type=AT_LEAST_ONE, default=5, show_default=True)
def hysac_retrieve(model: Path, query: str, gallery: Path, traverse: bool, k: int) -> None:
    """The images of --gallery nearest to --query (geodesic distance for HySAC, cosine for a
    plain CLIP).

    \b
    Example:
      redteam hysac retrieve ./hysac --query "a street fight" --gallery photos/ --traverse
    """
    from redteam.commands.hysac import retrieve_images

    answer = retrieve_images(model, query, gallery, k=k, traverse=traverse)
    if "radius" in answer:
        verdict = "unsafe" if answer["unsafe"] else "safe"
        moved = "; moved back to the safety radius" if answer["traversed"] else ""
        click.echo(f"query: {verdict} (radius {answer['radius']:.4f}, bound "
                   f"{answer['bound']:.4f}){moved}")
    for rank, row in enumerate(answer["results"], start=1):
        click.echo(f"{rank:2} {row['distance']:.4f} {row['image']}")


@cli.command()
@click.option("--out", type=EXISTING, default=Path("redteam-runs/demo"), show_default=True)
@click.option("--size", type=click.Choice(["demo", "test"]), default="demo", show_default=True,
              help="`test` builds a smaller, faster zoo.")
@common_options("seed", "quiet")
def demo(out: Path, size: str, seed: int, quiet: bool) -> None:
    """Build the embedded demo targets (cached) and audit every one of them.

    \b
    Example:
      redteam demo && open redteam-runs/demo/index.html
    """
    from redteam.demo import run_demo

    index = run_demo(out=out, size=size, seed=seed, quiet=quiet)
    click.echo(f"demo report: {index}")


def _print_run_and_exit(result) -> None:
    """The one way a run's result is printed: one line per finding (status, severity, probe,
    summary), then the counts and the report's path; exit with the run's exit code. Under
    accelerate launch only the main process prints."""
    from redteam.core.distributed import is_main_process

    if is_main_process():
        counts: dict[str, int] = {}
        for finding in result.findings:
            counts[finding.status] = counts.get(finding.status, 0) + 1
            click.echo(f"{finding.status:12} {finding.severity:8} {finding.probe}: "
                       f"{finding.summary}")
        total = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no findings"
        click.echo(f"{total}; report: {result.out_dir / 'report.html'}")
    sys.exit(result.exit_code)


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input and usage errors become one line on stderr and exit code 2."""
    try:
        cli.main(args=argv, prog_name="redteam", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except Interrupted as exc:
        if exc.out is None:
            _error("interrupted")
        elif _takes_resume(argv):
            _error(f"interrupted; the finished probes are kept in {exc.out}: run the same "
                   f"command with --out {exc.out} --resume to finish it")
        else:
            _error(f"interrupted; what had finished is kept in {exc.out} (run the command "
                   f"again with a new --out, or with --overwrite)")
        return 130
    except (click.exceptions.Abort, KeyboardInterrupt):
        _error("interrupted")
        return 130
    except click.UsageError as exc:
        _error(f"{exc.format_message()} (see `redteam {_command(argv)}--help`)")
        return 2
    except InputError as exc:
        _error(str(exc))
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES:
            raise
        _error(f"{exc.filename or 'output'}: cannot be written ({os.strerror(exc.errno)}); "
               f"what was written before is left as it is")
        return 2
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":  # a Rust library's panic (pyo3)
            raise
        _error(f"a native library failed on the input ({type(exc).__name__}: "
               f"{str(exc).strip()[:300]})")
        return 2
    return 0


# The file system refusing a write (full, over quota, read-only, a name too long): the user's
# environment, not a bug, so one line and exit 2 like bad input.
WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.EFBIG}


def _error(message: str) -> None:
    """One line on stderr: control characters of user strings (a newline in a path, ANSI
    escapes in a JSON key) are shown escaped, never sent to the terminal."""
    shown = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)
    click.echo(f"error: {shown}", err=True)


def _takes_resume(argv: list[str] | None) -> bool:
    command = cli.commands.get(_command(argv).strip())
    return command is not None and any(p.name == "resume" for p in command.params)


def _command(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    first = next((a for a in args if not a.startswith("-")), None)
    return f"{first} " if first in cli.commands else ""


if __name__ == "__main__":
    sys.exit(main())
