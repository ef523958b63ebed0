"""``redteam guard``: train a prompt guard on audit data, check prompts with it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from redteam.cli.base import (
    PATH,
    cli,
    common_options,
)


@cli.group()
def guard() -> None:
    """Train a prompt guard that flags prompts about the forget subjects, and check prompts.

    The guard (ECO prompts, O3) is a text classifier on the frozen all-MiniLM-L6-v2 encoder; it
    can itself be audited with `redteam audit GUARD --suite adversarial`.
    """


@guard.command("train")
@click.option("--data", required=True, type=PATH, help="Audit JSONL (forget/retain items).")
@click.option("--out", required=True, type=PATH,
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
@click.argument("guard_dir", type=PATH)
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
