"""``redteam data``: import a benchmark into audit JSONL, validate audit data."""

from __future__ import annotations

from pathlib import Path

import click

from redteam.cli.base import (
    PATH,
    cli,
)
from redteam.commands import data_import as benchmarks  # light: no torch, read at import


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
@click.argument("source", type=PATH)
@click.option("--out", required=True, type=PATH, help="The audit JSONL to write (new file).")
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
@click.argument("file", type=PATH)
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
