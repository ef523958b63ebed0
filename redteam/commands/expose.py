"""``redteam expose``: is there a backdoor in this image classifier, and can it be removed?

The boundary of the EBYD workflow: every folder and the output paths are checked against the
loaded model before anything runs (bad input: one line, exit 2, nothing written), then the
``backdoor`` suite runs as an audit, with the removal probe switched on by ``--remove``.
"""

from __future__ import annotations

from pathlib import Path

from redteam.core.errors import InputError
from redteam.core.outputs import check_output_path
from redteam.engine import AuditRequest, AuditResult, ModelCache, default_out_dir, run_audit
from redteam.targets import resolve_device


def expose_model(model: Path, clean_data: Path, *, test_data: Path | None = None,
                 poisoned_data: Path | None = None, trigger: Path | None = None,
                 out: Path | None = None, repaired: Path | None = None, device: str = "auto",
                 seed: int = 0, fail_on: str = "high", overwrite: bool = False,
                 allow_pickle: bool = False, quiet: bool = False,
                 command: list[str] | None = None,
                 settings: dict[str, dict] | None = None) -> AuditResult:
    """Run the backdoor suite on ``model`` with the defender's ``clean_data``.

    ``settings``: per-probe settings (as in an audit.toml) over the defaults.
    """
    from redteam.core.vision import label_ids, load_image_folder
    from redteam.probes.backdoor import trigger_mask

    inputs = {"model": model, "clean data": clean_data, "test data": test_data,
              "poisoned data": poisoned_data, "trigger": trigger}
    out = out or default_out_dir(model)
    if repaired is not None:
        check_output_path(repaired, {**inputs, "run folder": out}, flag="--remove",
                          what="folder for the repaired model")
    check_output_path(out, {**inputs, "repaired model folder": repaired}, overwrite=overwrite)
    cache = ModelCache()
    target = cache.target(model, None, resolve_device(device), allow_pickle)
    if target.kind != "image-classifier":
        raise InputError(f"{model}: redteam expose needs an image classifier, not {target.kind}")
    classes = label_ids(target.model.hf_model.config)
    for folder in (clean_data, test_data, poisoned_data):
        if folder is not None:
            load_image_folder(folder, target.model.size, classes)
    if trigger is not None:
        trigger_mask(trigger, target.model.size)
    settings = {name: dict(values) for name, values in (settings or {}).items()}
    if trigger is not None:
        settings.setdefault("backdoor.trigger_recovery", {})["true_trigger"] = str(trigger)
    if repaired is not None:
        settings.setdefault("backdoor.removal", {}).update({
            "output": str(repaired), "test_data": str(test_data or ""),
            "poisoned_data": str(poisoned_data or "")})
    return run_audit(AuditRequest(
        model=model, suite="backdoor", data=clean_data, out=out, device=device, seed=seed,
        fail_on=fail_on, overwrite=overwrite, allow_pickle=allow_pickle, quiet=quiet,
        settings=settings, command=command or ["redteam", "expose", str(model)],
        extra_inputs={label: path for label, path in inputs.items()
                      if path is not None and label not in ("model", "clean data")}), cache)
