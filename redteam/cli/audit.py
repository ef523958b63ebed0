"""``redteam audit``, ``redteam list`` and ``redteam report`` (render a run again, or compare
two)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from redteam.cli.base import (
    AT_LEAST_ONE,
    MODEL_OR_ENDPOINT,
    PATH,
    LazyChoice,
    cli,
    common_options,
    concept_options,
    endpoint_options,
    endpoint_spec,
    formats_option_value,
    print_run_and_exit,
    prompt_format_options,
    target_kinds,
)
from redteam.core.errors import InputError
from redteam.core.findings import SEVERITIES


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
            if info["model_access"]:
                click.echo(f"  {'':36} model access: {', '.join(info['model_access'])}")
            for setting, accepts in info["settings"].items():
                click.echo(f"  {'':36} {setting} = {info['defaults'][setting]!r} ({accepts})")
            if info["severity_rule"]:
                click.echo(f"  {'':36} severity rule: {info['severity_rule']}")



@cli.command()
@click.argument("model", type=MODEL_OR_ENDPOINT)
@click.option("--suite", required=True, help="Suite to run (see `redteam list`).")
@click.option("--data", type=PATH,
              help="Audit data: JSONL for LLMs, a folder of class sub-folders of images for "
                   "image classifiers, labelled-text JSONL for text classifiers, ViSU "
                   "quadruplet JSONL for CLIP/HySAC (see docs/data-formats.md).")
@click.option("--reference", type=MODEL_OR_ENDPOINT,
              help="The original model: before unlearning, the base CLIP of a HySAC, or the "
                   "pipeline before concept erasure (an LLM may be an endpoint URL).")
@click.option("--retrain", type=MODEL_OR_ENDPOINT,
              help="Gold model retrained without the forget set (a folder or an endpoint URL).")
@concept_options
@click.option("--retrain-results", type=PATH,
              help="Instead of --retrain: an earlier run folder of (or with) the gold model; "
                   "its measurements are re-used (same data, prompt format and settings, else "
                   "exit 2).")
@click.option("--base", type=PATH,
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
@click.option("--config", type=PATH, help="audit.toml with per-probe thresholds.")
@click.option("--kind", type=LazyChoice(target_kinds),
              help="Force the target kind instead of detecting it.")
@click.option("--resume", is_flag=True,
              help="Finish the interrupted run in --out: its finished probes are re-used (same "
                   "model, data, settings and prompt format, else exit 2).")
@endpoint_options
@common_options("device", "seed", "fail-on", "allow-pickle", "overwrite", "quiet", "format")
def audit(model: Path | str, suite: str, data, reference, retrain, prompts, judge,
          concept_label, judge_top_k, concept_images, retrain_results, base, out, probes,
          max_items, batch_size, prompt_format, shots, system_prompt, device, seed, fail_on,
          config, kind, resume, served_model, api_key_env, concurrency, request_timeout,
          endpoint_cache, allow_pickle, overwrite, quiet, formats) -> None:
    """Audit MODEL (a folder, or the URL of an OpenAI-compatible endpoint) with a suite of
    probes and write an HTML risk report.

    \b
    Example:
      redteam audit ./my-unlearned-llm --suite unlearning --data audit.jsonl \\
          --reference ./original --retrain ./gold --out runs/x
      redteam audit http://127.0.0.1:8000/v1 --served-model my-llm --suite unlearning \\
          --data audit.jsonl --api-key-env MY_KEY
      redteam audit ./erased-pipeline --suite concept --prompts prompts.txt \\
          --judge ./classifier --concept-label 3 --reference ./original
    """
    from redteam.core.prompts import load_prompt_format
    from redteam.engine import AuditRequest, run_audit

    if served_model and not isinstance(model, str):
        raise InputError("--served-model: applies when MODEL is an endpoint URL")
    reach = (api_key_env, concurrency, request_timeout, endpoint_cache)
    model = endpoint_spec(model, served_model, *reach)
    reference, retrain = (endpoint_spec(m, None, *reach) for m in (reference, retrain))
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
    print_run_and_exit(result)



class _ReportCommands(click.Group):
    """``redteam report RUN_DIR`` renders a run (the hidden ``render``); ``redteam report diff A
    B`` compares two. A first argument that names no subcommand is the run folder of
    ``render``, resolved in ``resolve_command`` (Click's hook for choosing the subcommand), so
    the arguments reach it as given."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands:
            return "render", self.commands["render"], args
        return super().resolve_command(ctx, args)


@cli.group(cls=_ReportCommands)
def report() -> None:
    """Write a run's report again (and SARIF, JUnit), or compare two runs.

    \b
    Examples:
      redteam report runs/x --format html,sarif,junit
      redteam report diff runs/before runs/after --out diff.html
    """


@report.command("render", hidden=True)
@click.argument("run_dir", type=PATH)
@click.option("--format", "formats", default="html", show_default=True,
              callback=lambda ctx, param, value: formats_option_value(value),
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
@click.argument("run_a", type=PATH)
@click.argument("run_b", type=PATH)
@click.option("--out", type=PATH, help="The HTML page to write (its JSON form beside it) "
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
