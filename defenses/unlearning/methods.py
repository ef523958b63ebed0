"""Unlearning by fine-tuning: gradient ascent, gradient difference and NPO.

Losses (REFERENCES.md, open-unlearning):
- GA: L = -NLL_forget (push the forget data's likelihood down);
- GradDiff: L = -NLL_forget + w * NLL_retain (and keep the retain data's up);
- NPO (Zhang et al. 2024, arXiv:2404.05868): L = -(2/beta) mean log sigmoid(-beta (log pi_theta(y|x)
  - log pi_ref(y|x))) with sequence log-likelihoods and a frozen copy of the starting model as
  reference, plus w * NLL_retain when retain texts are given (open-unlearning's NPO default).

Adding a method is adding an entry to ``METHODS``: a function of (model, reference, forget batch,
retain batch or None, settings) returning the loss.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from itertools import cycle

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from defenses.unlearning.losses import encode_batch, mean_nll, sequence_logprob
from redteam.prompts import qa_block
from redteam.training import finish_training, optimizer_step

Batch = dict[str, torch.Tensor]


def ga_loss(model, reference, forget: Batch, retain: Batch | None, settings: dict):
    return -mean_nll(model, forget)


def graddiff_loss(model, reference, forget: Batch, retain: Batch | None, settings: dict):
    loss = -mean_nll(model, forget)
    if retain is not None:
        loss = loss + settings["retain_weight"] * mean_nll(model, retain)
    return loss


def npo_loss(model, reference, forget: Batch, retain: Batch | None, settings: dict):
    beta = settings["beta"]
    with torch.no_grad():
        reference_logp = sequence_logprob(reference, forget)
    log_ratio = sequence_logprob(model, forget) - reference_logp
    loss = -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()
    if retain is not None:
        loss = loss + settings["retain_weight"] * mean_nll(model, retain)
    return loss


METHODS: dict[str, Callable] = {"ga": ga_loss, "graddiff": graddiff_loss, "npo": npo_loss}
NEEDS_REFERENCE = {"npo"}
USES_RETAIN = {"graddiff", "npo"}


def training_texts(items: list[dict]) -> list[str]:
    """The texts to unlearn on (or to retain): QA blocks in the probes' format, then texts."""
    texts = []
    for item in items:
        if item.get("question") and item.get("answer"):
            texts.append(qa_block(item["question"], item["answer"]))
        if item.get("text"):
            texts.append(item["text"])
    return list(dict.fromkeys(texts))


def _batches(texts: list[str], batch_size: int, rng: random.Random) -> list[list[str]]:
    order = texts[:]
    rng.shuffle(order)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def unlearn(model, tokenizer, forget_texts: list[str], retain_texts: list[str] | None,
            method: str, *, epochs: int = 5, lr: float = 1e-4, batch_size: int = 8,
            beta: float = 0.1, retain_weight: float = 1.0, max_length: int = 256,
            seed: int = 0, quiet: bool = False):
    """Fine-tune ``model`` to forget ``forget_texts``; returns the updated model (in eval mode).

    Training goes through ``accelerate.Accelerator`` so ``accelerate launch`` scales it.
    """
    from accelerate import Accelerator

    if method not in METHODS:
        raise ValueError(f"unknown unlearning method {method!r} (known: {', '.join(METHODS)})")
    if not forget_texts:
        raise ValueError("the forget set is empty: nothing to unlearn")
    if method == "graddiff" and not retain_texts:
        raise ValueError("graddiff needs retain texts (without them it is plain GA)")
    settings = {"beta": beta, "retain_weight": retain_weight}
    torch.manual_seed(seed)
    rng = random.Random(seed)
    reference = None
    if method in NEEDS_REFERENCE:
        reference = copy.deepcopy(model).eval()
        reference.requires_grad_(False)
    retain_texts = retain_texts if method in USES_RETAIN and retain_texts else None
    positions = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", max_length)
    max_length = min(max_length, int(positions))

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    if reference is not None:
        reference.to(accelerator.device)
    model.train()
    steps = epochs * len(_batches(forget_texts, batch_size, rng))
    retain_stream = cycle(_batches(retain_texts, batch_size, rng)) if retain_texts else None
    progress = tqdm(total=steps, desc=f"unlearning ({method})", disable=quiet, leave=False)

    def to_device(texts: list[str]) -> Batch:
        batch = encode_batch(tokenizer, texts, max_length)
        return {k: v.to(accelerator.device) for k, v in batch.items()}

    for _ in range(epochs):
        for forget_batch in _batches(forget_texts, batch_size, rng):
            retain_batch = to_device(next(retain_stream)) if retain_stream else None
            loss = METHODS[method](model, reference, to_device(forget_batch), retain_batch,
                                   settings)
            optimizer_step(accelerator, model.parameters(), optimizer, loss, progress)
    return finish_training(accelerator, model, progress)
