"""``redteam demo``: build the demo models and audit them with every command."""

from __future__ import annotations

from pathlib import Path

import click

from redteam.cli.base import (
    PATH,
    cli,
    common_options,
)


@cli.command()
@click.option("--out", type=PATH, default=Path("redteam-runs/demo"), show_default=True)
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
