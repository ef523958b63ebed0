"""What every command shares: the ``redteam`` group, the parameter types, the options several
commands take (one definition each) and the one way a run's result is printed."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from redteam import __version__
from redteam.core.findings import SEVERITIES

# A path as the user gave it: the back-end checks it (exists, is a folder, holds a model) and
# names the problem in its own words, so Click only converts it.
PATH = click.Path(path_type=Path)
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


class ModelOrEndpoint(click.ParamType):
    """A model folder (a ``Path``, checked by the back-end like ``PATH``) or the ``http://`` or
    ``https://`` URL of an OpenAI-compatible endpoint serving one (a ``str``)."""

    name = "model"

    def convert(self, value, param, ctx) -> Path | str:
        if isinstance(value, Path):
            return value
        text = str(value)
        return text if text.lower().startswith(("http://", "https://")) else Path(text)


MODEL_OR_ENDPOINT = ModelOrEndpoint()
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

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        self._load = load
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._load())

    @choices.setter
    def choices(self, given: tuple[str, ...]) -> None:
        """``Choice.__init__`` sets the choices; here they are always the loader's."""


def target_kinds() -> tuple[str, ...]:
    from redteam.targets import TARGET_KINDS

    return tuple(TARGET_KINDS)


def unlearning_methods() -> tuple[str, ...]:
    from defenses.unlearning import METHODS

    return tuple(METHODS)


def protection_methods() -> tuple[str, ...]:
    from redteam.commands.protect import METHODS

    return METHODS


def repair_methods() -> tuple[str, ...]:
    from redteam.commands.expose import REPAIR_METHODS

    return REPAIR_METHODS


# The options several commands share, one definition each: ``@common_options("device", ...)``.
COMMON_OPTIONS = {
    "out": click.option("--out", type=PATH,
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
                           callback=lambda ctx, param, value: formats_option_value(value),
                           help="What the run folder holds, comma-separated: html "
                                "(report.html), json (findings.json, always written), sarif "
                                "(findings.sarif), junit (junit.xml)."),
}


def endpoint_options(command):
    """How a model behind an endpoint (a MODEL, --reference or --retrain given as a URL) is
    reached; ``endpoint_spec`` turns them into an ``EndpointSpec``."""
    for option in reversed((
        click.option("--served-model", help="The served model's id (as /v1/models lists it) "
                     "[default: the one model the endpoint serves]."),
        click.option("--api-key-env", metavar="NAME",
                     help="The environment variable holding the endpoint's API key (the key "
                          "is never taken on the command line, nor recorded)."),
        click.option("--concurrency", type=click.IntRange(1, 256), default=4,
                     show_default=True, help="Requests in flight to an endpoint."),
        click.option("--request-timeout", type=FiniteFloat(min=1), default=120.0,
                     show_default=True, help="Seconds before a request is retried."),
        click.option("--endpoint-cache", type=PATH,
                     help="Folder of the endpoint's responses, keyed by request, so a re-run "
                          "or --resume asks nothing twice [default: redteam-runs/.endpoint-"
                          "cache]."),
    )):
        command = option(command)
    return command


def endpoint_spec(model: Path | str | None, served_model: str | None, api_key_env: str | None,
                  concurrency: int, request_timeout: float, endpoint_cache: Path | None):
    """``model`` as the back-end takes it: a folder stays a ``Path``; a URL becomes an
    ``EndpointSpec`` (``served_model`` names the target's model: comparison models at a URL
    are the one model their endpoint serves)."""
    if not isinstance(model, str):
        return model
    from redteam.engine import RUNS
    from redteam.targets import EndpointSpec

    return EndpointSpec(url=model, served_model=served_model, api_key_env=api_key_env,
                        concurrency=concurrency, timeout_s=request_timeout,
                        cache_dir=endpoint_cache or RUNS / ".endpoint-cache")


def formats_option_value(value: str) -> tuple[str, ...]:
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
        click.option("--prompts", type=PATH,
                     help="Diffusion pipelines: prompts, one per line, or a CSV with columns "
                          "prompt, evaluation_seed, evaluation_guidance."),
        click.option("--judge", help="Diffusion pipelines: what judges an image, an "
                     "image-classifier folder (with --concept-label) or nudenet."),
        click.option("--concept-label", help="The judge classifier's label (name or id) of "
                     "the concept."),
        click.option("--judge-top-k", type=AT_LEAST_ONE, default=1, show_default=True,
                     help="The concept is shown when its label is among the judge's top k."),
        click.option("--concept-images", type=PATH,
                     help="Images of the concept the attack aims at [default: generated by "
                          "--reference from each prompt and seed]."),
    ]):
        command = option(command)
    return command



def print_run_and_exit(result) -> None:
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

