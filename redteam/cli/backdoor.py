"""``redteam expose``: find, describe and remove a classifier's backdoor."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from redteam.cli.base import (
    PATH,
    LazyChoice,
    cli,
    common_options,
    print_run_and_exit,
    repair_methods,
)


@cli.command()
@click.argument("model", type=PATH)
@click.option("--clean-data", required=True, type=PATH,
              help="A few hundred clean inputs you trust: images (one sub-folder per class), "
                   "or labelled-text JSONL for a text classifier.")
@click.option("--test-data", type=PATH,
              help="Clean test data (same format) for accuracy after removal.")
@click.option("--poisoned-data", type=PATH,
              help="Test inputs carrying the trigger at their true labels: images in the "
                   "folder of their true class, or labelled texts (attack success before and "
                   "after removal).")
@click.option("--trigger", help="The true trigger, if known: a PNG (black elsewhere) for an "
              "image classifier, shown beside the recovered one with their overlap; the "
              "trigger word(s) for a text classifier, with the rank the search found it at.")
@common_options("out")
@click.option("--remove", "repaired", type=PATH,
              help="Also remove the backdoor and write the repaired model to this new folder.")
@click.option("--remove-method", type=LazyChoice(repair_methods), default="auto",
              show_default=True,
              help="auto: unlearn the recovered trigger when one was found for the backdoor "
                   "label, else prune its neurons (RNP, image classifiers).")
@click.option("--config", type=PATH,
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
    from redteam.commands.expose import ExposeRequest, expose_model

    result = expose_model(ExposeRequest(
        model=model, clean_data=clean_data, test_data=test_data, poisoned_data=poisoned_data,
        trigger=trigger, out=out, repaired=repaired, device=device, seed=seed, fail_on=fail_on,
        overwrite=overwrite, allow_pickle=allow_pickle, quiet=quiet,
        command=["redteam", *sys.argv[1:]], repair_settings={"method": remove_method},
        formats=formats, config=config))
    print_run_and_exit(result)
