"""``redteam hysac``: train a HySAC model from a CLIP, and use it (classify, retrieve).

The method lives in ``hyperbolic`` (Poppi et al., CVPR 2025). This module is the boundary: it
validates the paths and the data before anything heavy runs, loads models with the audit's
safety rules (safetensors only, offline, no remote code), and writes the trained model as a new
folder in one atomic step. ``redteam hysac evaluate`` is the safety suite of ``redteam audit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperbolic.losses import ENTAILMENT_WEIGHT
from redteam.core.errors import InputError
from redteam.core.outputs import check_output_path, staged_output
from redteam.core.training import check_trained
from redteam.targets import (
    CLIP_KINDS,
    detect_kind,
    load_target,
    quadruplet_folders,
    resolve_device,
)

TRAINING_RECORD = "hysac_training.json"


def load_encoder(path: Path, device: str = "cpu", allow_pickle: bool = False,
                 kinds: tuple[str, ...] = CLIP_KINDS):
    """The ``hyperbolic.encoder.Encoder`` of a CLIP or HySAC folder, loaded as an audit target."""
    kind = detect_kind(path)
    if kind not in kinds:
        raise InputError(f"{path}: a {kind} model, expected {' or '.join(kinds)}")
    return load_target(path, kind=kind, device=device, allow_pickle=allow_pickle).model


@dataclass(frozen=True, kw_only=True)
class HySACTrainingRequest:
    """Everything ``redteam hysac train`` was asked to do (plain data; the CLI fills it).

    The numbers are checked when the request is made, with the CLI's flag names in the
    messages: a request out of range cannot exist, so nothing reads or loads for one.
    """

    data: Path  # the JSONL of ViSU quadruplets
    base: Path  # the CLIP folder to fine-tune
    out: Path  # the new folder for the HySAC model
    epochs: int = 20  # at most; training stops early on the validation loss
    lr: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.2
    val_fraction: float = 0.2  # of the quadruplets, held out for early stopping
    patience: int = 3  # epochs without a better validation loss before stopping
    entailment_weight: float = ENTAILMENT_WEIGHT  # of the entailment-cone terms
    lora_rank: int = 0  # LoRA adapters of this rank; 0: fine-tune every weight
    curvature: float = 1.0  # the initial curvature c (learnt, within [c/10, 10c])
    seed: int = 0
    device: str = "auto"
    allow_pickle: bool = False
    quiet: bool = True

    def __post_init__(self) -> None:
        for name, value, ok in (("--epochs", self.epochs, self.epochs >= 1),
                                ("--lr", self.lr, self.lr > 0),
                                ("--batch-size", self.batch_size, self.batch_size >= 2),
                                ("--weight-decay", self.weight_decay, self.weight_decay >= 0),
                                ("--val-fraction", self.val_fraction,
                                 0 < self.val_fraction < 1),
                                ("--patience", self.patience, self.patience >= 1),
                                ("--entailment-weight", self.entailment_weight,
                                 self.entailment_weight >= 0),
                                ("--lora-rank", self.lora_rank, self.lora_rank >= 0),
                                ("--curvature", self.curvature, self.curvature > 0)):
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise InputError(f"{name} {value}: out of range")


def train_hysac_folder(request: HySACTrainingRequest) -> dict[str, Any]:
    """Fine-tune the CLIP folder ``request.base`` into a HySAC on the quadruplets of
    ``request.data``; write it to the new folder ``request.out`` (with
    ``hysac_training.json``); return that record."""
    import torch

    from hyperbolic.data import hash_quadruplets, load_quadruplets
    from hyperbolic.model import HySAC
    from hyperbolic.train import train_hysac
    from redteam.core.fileio import atomic_write_json, hash_tree

    data, base, out = Path(request.data), Path(request.base), Path(request.out)
    rows = load_quadruplets(data)
    if len(rows) < 4:
        raise InputError(f"{data}: {len(rows)} quadruplets are too few to train and validate")
    check_output_path(out, {"base model": base, "data": data, **quadruplet_folders(rows)})
    device = resolve_device(request.device)
    encoder = load_encoder(base, device, request.allow_pickle, kinds=("clip",))
    model = HySAC(encoder.clip, curvature=request.curvature).to(device)
    settings = {"epochs": request.epochs, "lr": request.lr, "batch_size": request.batch_size,
                "weight_decay": request.weight_decay, "val_fraction": request.val_fraction,
                "patience": request.patience, "entailment_weight": request.entailment_weight,
                "lora_rank": request.lora_rank}
    result = train_hysac(model, encoder.tokenizer, encoder.processor, rows, **settings,
                         seed=request.seed, quiet=request.quiet)
    record = {"base": {"path": str(base), "files": hash_tree(base)},
              "data": {"path": str(data), "files": hash_quadruplets(data, rows),
                       "quadruplets": len(rows)},
              "settings": {**settings, "curvature": request.curvature, "seed": request.seed,
                           "device": device, "torch": torch.__version__},
              **result}
    check_trained(model, "HySAC training")
    with staged_output(out, "HySAC model") as tmp:
        model.save(tmp)
        encoder.tokenizer.save_pretrained(tmp)
        encoder.processor.save_pretrained(tmp)
        atomic_write_json(tmp / TRAINING_RECORD, record)
    return record


def evaluate(model: Path, data: Path, *, reference: Path | None = None,
             out: Path | None = None, overwrite: bool = False, **settings: Any) -> Any:
    """``redteam hysac evaluate``: the safety suite of ``redteam audit`` on ``model`` with the
    quadruplets of ``data``; ``settings`` are the other ``AuditRequest`` fields (device,
    fail_on, quiet, formats, ...). Returns the ``AuditResult``.

    The folders of the images the quadruplets name are inputs too (the engine adds them, as
    ``hysac train`` does): an ``--out`` (with ``--overwrite``) that holds them would delete
    them before a probe reads them.
    """
    from redteam.engine import AuditRequest, run_audit

    return run_audit(AuditRequest(model=model, suite="safety", data=data, reference=reference,
                                  out=out, overwrite=overwrite, **settings))


def classify(model_dir: Path, texts: list[str], images: list[Path], *,
             device: str = "cpu") -> list[dict[str, Any]]:
    """Each caption and image with its distance from the origin and its verdict against the
    HySAC model's safety radius: ``{"input", "modality", "radius", "bound", "unsafe"}``."""
    encoder = load_encoder(Path(model_dir), resolve_device(device), kinds=("hysac",))
    if encoder.hysac.safety_radius is None:
        raise InputError(f"{model_dir}: hysac_config.json has no safety_radius")
    results = []
    for modality, inputs, points in (
            ("text", texts, encoder.embed_texts(texts) if texts else None),
            ("image", images, encoder.embed_files(images) if images else None)):
        if points is None:
            continue
        for item, radius, unsafe in zip(inputs, encoder.radii(points).tolist(),
                                        encoder.classify_unsafe(points).tolist(), strict=True):
            results.append({"input": str(item), "modality": modality, "radius": radius,
                            "bound": encoder.safety_radius, "unsafe": bool(unsafe)})
    return results


def retrieve_images(model_dir: Path, query: str, gallery: Path, *, k: int = 5,
                    traverse: bool = False, device: str = "cpu") -> dict[str, Any]:
    """The ``k`` images of the folder ``gallery`` nearest to the caption ``query``. With
    ``traverse`` (HySAC only), an unsafe query is first moved back to the safety radius."""
    from redteam.core.vision import list_image_files

    if k < 1:
        raise InputError(f"--k {k}: must be at least 1")
    encoder = load_encoder(Path(model_dir), resolve_device(device))
    if traverse and encoder.hysac is None:
        raise InputError(f"{model_dir}: --traverse needs a HySAC model (this is a plain CLIP)")
    files = list_image_files(gallery)
    if not files:
        raise InputError(f"{gallery}: no images")
    point = encoder.embed_texts([query])
    answer: dict[str, Any] = {"query": query, "traversed": False}
    if encoder.hysac is not None and encoder.hysac.safety_radius is not None:
        answer["radius"] = encoder.radii(point).item()
        answer["bound"] = encoder.safety_radius
        answer["unsafe"] = bool(encoder.classify_unsafe(point).item())
        if traverse and answer["unsafe"]:
            point, answer["traversed"] = encoder.traverse(point), True
    gallery_points = encoder.embed_files(files)
    distances = encoder.distances(point, gallery_points)[0]
    nearest = distances.topk(min(k, len(files)), largest=False).indices.tolist()
    answer["results"] = [{"image": str(files[i]), "distance": distances[i].item()}
                         for i in nearest]
    return answer

