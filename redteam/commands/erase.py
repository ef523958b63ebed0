"""``redteam erase``: erase a concept from a diffusion pipeline with ESD, into a new folder.

The method is ``defenses.unlearning.esd.ESD``; this is the boundary: the paths are checked
before anything loads, the pipeline loads under the rules of every target, and the erased
pipeline (every component, the UNet replaced) is written with ``erasure.json`` into a staging
folder that takes the place of ``out`` only when complete. The input is never modified.
"""

from __future__ import annotations

from pathlib import Path

from redteam.core.errors import InputError
from redteam.core.fileio import atomic_write_json, hash_tree
from redteam.core.outputs import check_output_path, staged_output
from redteam.targets import detect_kind, load_target, resolve_device


def erase_concept(pipeline: Path, concept: str, out: Path, *, method: str = "esd-x",
                  iterations: int = 1000, lr: float = 1e-5, eta: float = 1.0,
                  sample_steps: int = 50, seed: int = 0, device: str = "auto",
                  allow_pickle: bool = False, overwrite: bool = False,
                  quiet: bool = False) -> Path:
    """Erase ``concept`` from the pipeline folder ``pipeline`` into the new folder ``out``."""
    from defenses.unlearning.esd import ESD, METHODS, REFERENCE

    if method not in METHODS:
        raise InputError(f"--method {method}: unknown method (known: {', '.join(METHODS)})")
    if not concept.strip():
        raise InputError("--concept: empty; name the concept to erase, e.g. \"nudity\"")
    check_output_path(out, {"pipeline": pipeline}, overwrite=overwrite)
    if detect_kind(pipeline) != "diffusion":
        raise InputError(f"{pipeline}: not a diffusion pipeline folder (no model_index.json)")
    target = load_target(pipeline, kind="diffusion", device=resolve_device(device),
                         allow_pickle=allow_pickle)
    eraser = ESD(concept.strip(), method=method, iterations=iterations, lr=lr, eta=eta,
                 sample_steps=sample_steps, seed=seed, quiet=quiet).fit(target.model)
    erased = target.model
    erased.unet = eraser.unet_  # the in-memory pipeline only; its folder is not written
    with staged_output(out, "erased pipeline") as staging:
        erased.save_pretrained(staging, safe_serialization=True)
        atomic_write_json(staging / "erasure.json", {
            "method": method, "reference": REFERENCE, "settings": eraser.parameters(),
            "source": {"path": str(pipeline), "files": target.files},
            "trained": "cross-attention layers (attn2)" if method == "esd-x"
                       else "every UNet layer but cross-attention",
            "note": "ESD-u also weakens concepts near the erased one (Gandikota et al. 2023)"
                    if method == "esd-u" else "",
            "final_loss": eraser.losses_[-1] if eraser.losses_ else None,
            "files": hash_tree(staging)})
    return out
