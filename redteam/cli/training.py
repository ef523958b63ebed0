"""The commands that train a model: ``redteam unlearn`` and ``redteam erase``."""

from __future__ import annotations

from pathlib import Path

import click

from redteam.cli.base import (
    AT_LEAST_ONE,
    FINITE,
    PATH,
    POSITIVE,
    FiniteFloat,
    LazyChoice,
    cli,
    common_options,
    prompt_format_options,
    unlearning_methods,
)


@cli.command()
@click.argument("model", type=PATH)
@click.option("--method", required=True, type=LazyChoice(unlearning_methods),
              help="GA, GradDiff, NPO, SimNPO, or SalUn's saliency mask on GradDiff / NPO.")
@click.option("--data", required=True, type=PATH, help="Audit JSONL (forget/retain items).")
@click.option("--out", required=True, type=PATH, help="New folder for the unlearned model.")
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
@click.argument("pipeline", type=PATH)
@click.option("--concept", required=True, help="The concept to erase, as a prompt names it.")
@click.option("--method", type=click.Choice(["esd-x", "esd-u"]), default="esd-x",
              show_default=True,
              help="esd-x: train the cross-attention layers (a style, an artist); esd-u: the "
                   "other layers (a global concept: nudity, an object).")
@click.option("--out", required=True, type=PATH, help="New folder for the erased pipeline.")
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
