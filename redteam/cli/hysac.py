"""``redteam hysac``: train, evaluate and use a hyperbolic safety-aware CLIP."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from redteam.cli.base import (
    AT_LEAST_ONE,
    FRACTION,
    NON_NEGATIVE,
    PATH,
    POSITIVE,
    cli,
    common_options,
    print_run_and_exit,
)
from redteam.core.errors import InputError


@cli.group()
def hysac() -> None:
    """Train a hyperbolic safety-aware CLIP (HySAC) and use it: classify, retrieve, evaluate.

    Data is a JSONL of ViSU quadruplets: {"safe_image", "unsafe_image", "safe_caption",
    "unsafe_caption"}, image paths relative to the file.
    """


@hysac.command("train")
@click.argument("data", type=PATH)
@click.option("--base", required=True, type=PATH, help="The CLIP model folder to fine-tune.")
@click.option("--out", required=True, type=PATH, help="New folder for the HySAC model.")
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
    from redteam.commands.hysac import HySACTrainingRequest, train_hysac_folder

    record = train_hysac_folder(HySACTrainingRequest(
        data=data, base=base, out=out, epochs=epochs, lr=lr, batch_size=batch_size,
        weight_decay=weight_decay, val_fraction=val_fraction, patience=patience,
        entailment_weight=entailment_weight, lora_rank=lora_rank, curvature=curvature,
        seed=seed, device=device, allow_pickle=allow_pickle, quiet=quiet))
    click.echo(f"trained on {record['train']} quadruplets, validated on {record['validation']}: "
               f"{record['epochs_run']} epochs, best validation loss {record['best_val_loss']}, "
               f"{record['samples_per_s']} quadruplets/s")
    click.echo(f"safety radius {record['safety_radius']:.4f} (95th percentile of the safe "
               f"training embeddings' distances to the origin)")
    click.echo(f"HySAC model: {out}")


@hysac.command("evaluate")
@click.argument("model", type=PATH)
@click.argument("data", type=PATH)
@click.option("--reference", type=PATH, help="The base CLIP, measured side by side.")
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
    print_run_and_exit(result)


@hysac.command("classify")
@click.argument("model", type=PATH)
@click.option("--text", "texts", multiple=True, help="A caption to classify (repeatable).")
@click.option("--image", "images", multiple=True, type=PATH,
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
@click.argument("model", type=PATH)
@click.option("--query", required=True, help="The caption to search with.")
@click.option("--gallery", required=True, type=PATH, help="A folder of images to search.")
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
