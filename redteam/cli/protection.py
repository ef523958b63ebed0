"""``redteam protect`` and ``redteam evaluate-protection``: unlearnable image datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from redteam.cli.base import (
    AT_LEAST_ONE,
    PATH,
    LazyChoice,
    cli,
    common_options,
    print_run_and_exit,
    protection_methods,
)


@cli.command()
@click.argument("data_dir", type=PATH)
@click.option("--out", required=True, type=PATH,
              help="New folder for the protected copy (same layout and formats).")
@click.option("--method", type=LazyChoice(protection_methods), default="auto",
              show_default=True,
              help="auto: Unlearnable Clusters with --surrogate, error-minimising noise on "
                   "label-free clusters without one.")
@click.option("--surrogate", type=PATH,
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
@click.argument("clean_dir", type=PATH)
@click.argument("protected_dir", type=PATH)
@click.option("--test-data", required=True, type=PATH,
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
    from redteam.commands.evaluate_protection import ProtectionEvaluationRequest
    from redteam.commands.evaluate_protection import evaluate_protection as evaluate

    result = evaluate(ProtectionEvaluationRequest(
        clean_dir=clean_dir, protected_dir=protected_dir, test_dir=test_data, out=out,
        learner=learner, groups=groups, epochs=epochs, image_size=image_size, epsilon=epsilon,
        seed=seed, device=device, fail_on=fail_on, overwrite=overwrite, quiet=quiet,
        command=["redteam", *sys.argv[1:]], formats=formats))
    print_run_and_exit(result)
