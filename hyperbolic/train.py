"""Training HySAC on ViSU quadruplets, with a validation split and early stopping.

The steps, in order: read every image once at the CLIP's input size; split the quadruplets into
training and validation (seeded); fine-tune the whole model (small CLIPs) or LoRA adapters on
the attention projections (``lora_rank`` > 0; HySAC uses r = 16 on ViT-L/14; they are merged
into the weights at the end, so the result is a plain ``CLIPModel`` again) with AdamW (lr 1e-4,
betas 0.9/0.98, weight decay 0.2, as HySAC) through ``accelerate``, keeping the weights of the
best validation epoch and stopping after ``patience`` epochs without improvement; finally set
the safety radius, the 95th percentile of the safe embeddings' distances to the origin (HySAC:
content beyond it is classified unsafe, and traversal moves a query back to it).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

from hyperbolic.data import Quadruplet
from hyperbolic.encoder import Encoder
from hyperbolic.lorentz import distance_to_origin
from hyperbolic.losses import ENTAILMENT_WEIGHT, hysac_loss
from hyperbolic.model import HySAC

SAFE_PERCENTILE = 95


def encode_batch(encoder: Encoder, rows: list[Quadruplet],
                 images: dict) -> tuple[torch.Tensor, ...]:
    """(safe text, unsafe text, safe image, unsafe image) points of ``rows``, with gradients;
    ``images`` holds every image of ``rows`` as pixels at the model's input size."""
    model = encoder.hysac

    def texts(captions: list[str]) -> torch.Tensor:
        return model.embed_text(**encoder.tokenize(captions))

    def pictures(paths) -> torch.Tensor:
        batch = torch.stack([images[path] for path in paths]).to(encoder.device)
        return model.embed_image(encoder.pixels.pixel_values(batch))

    return (texts([r.safe_caption for r in rows]), texts([r.unsafe_caption for r in rows]),
            pictures([r.safe_image for r in rows]), pictures([r.unsafe_image for r in rows]))


def _mean_loss(encoder: Encoder, rows, images, batch_size, entailment_weight: float) -> float:
    model = encoder.hysac.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            points = encode_batch(encoder, batch, images)
            loss = hysac_loss(*points, model.lorentz.c, model.logit_scale, entailment_weight)[0]
            total += loss.item() * len(batch)
    return total / len(rows)


def train_hysac(model: HySAC, tokenizer, processor, quadruplets: list[Quadruplet], *,
                epochs: int = 20, lr: float = 1e-4, batch_size: int = 32,
                weight_decay: float = 0.2, val_fraction: float = 0.2, patience: int = 3,
                entailment_weight: float = ENTAILMENT_WEIGHT, lora_rank: int = 0,
                seed: int = 0, quiet: bool = True) -> dict[str, Any]:
    """Train ``model`` in place on ``quadruplets``; return the history and the safety radius."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from redteam.core.training import optimizer_step
    from redteam.core.vision import read_resized

    torch.manual_seed(seed)
    encoder = Encoder(model, tokenizer, processor)
    size = encoder.size
    paths = sorted({p for r in quadruplets for p in (r.safe_image, r.unsafe_image)})
    images = {p: torch.from_numpy(read_resized(p, size)).permute(2, 0, 1) for p in paths}
    order = np.random.default_rng(seed).permutation(len(quadruplets))
    cut = max(1, int(round(val_fraction * len(quadruplets))))
    val = [quadruplets[i] for i in order[:cut]]
    train = [quadruplets[i] for i in order[cut:]]
    if len(train) < 2:
        raise ValueError(f"{len(quadruplets)} quadruplets are too few to train and validate")

    if lora_rank:
        model.clip = add_lora(model.clip, lora_rank)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  betas=(0.9, 0.98), weight_decay=weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    encoder.to(accelerator.device)
    steps = -(-len(train) // batch_size)
    progress = tqdm(total=epochs * steps, desc="train HySAC", disable=quiet, leave=False)
    generator = torch.Generator().manual_seed(seed)
    history, best, best_state, waited = [], float("inf"), None, 0
    started = time.perf_counter()
    seen = 0
    for epoch in range(epochs):
        model.train()
        shuffled = torch.randperm(len(train), generator=generator).tolist()
        for start in range(0, len(train), batch_size):
            batch = [train[i] for i in shuffled[start:start + batch_size]]
            if len(batch) < 2:  # a contrastive batch needs negatives
                continue
            points = encode_batch(encoder, batch, images)
            loss, _ = hysac_loss(*points, model.lorentz.c, model.logit_scale, entailment_weight)
            optimizer_step(accelerator, model.parameters(), optimizer, loss, progress)
            seen += len(batch)
        val_loss = _mean_loss(encoder, val, images, batch_size, entailment_weight)
        history.append({"epoch": epoch + 1, "train_loss": round(loss.item(), 5),
                        "val_loss": round(val_loss, 5)})
        if val_loss < best - 1e-6:
            best, best_state, waited = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= patience:
                break
    progress.close()
    model = accelerator.unwrap_model(model)
    if best_state is not None:
        model.load_state_dict(best_state)
    if lora_rank:
        model.clip = model.clip.merge_and_unload()
    model.eval()
    model.safety_radius = safe_radius(encoder, train, images, batch_size)
    seconds = time.perf_counter() - started
    return {"history": history, "best_val_loss": round(best, 5),
            "epochs_run": len(history), "train": len(train), "validation": len(val),
            "trainable_parameters": trainable,
            "samples_per_s": round(seen / seconds, 1), "safety_radius": model.safety_radius}


def add_lora(clip, rank: int):
    """``clip`` with LoRA adapters (peft; alpha = rank) on every attention projection; the
    original weights are frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0,
                        target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    return get_peft_model(clip, config)


def safe_radius(encoder: Encoder, rows: list[Quadruplet], images: dict,
                batch_size: int) -> float:
    """The 95th percentile of the safe texts' and safe images' distances to the origin."""
    radii = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            safe_text, _, safe_image, _ = encode_batch(encoder, rows[start:start + batch_size],
                                                       images)
            for points in (safe_text, safe_image):
                radii.append(distance_to_origin(points, encoder.hysac.lorentz.c).cpu())
    return float(np.percentile(torch.cat(radii).numpy(), SAFE_PERCENTILE))
