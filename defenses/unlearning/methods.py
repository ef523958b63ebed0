"""Unlearning by fine-tuning: GA, GradDiff, NPO, SimNPO, and SalUn's saliency-masked variants.

Losses (as open-unlearning defines them):
- GA: L = -NLL_forget (push the forget data's likelihood down);
- GradDiff: L = -NLL_forget + w * NLL_retain (and keep the retain data's up);
- NPO (Zhang et al. 2024, arXiv:2404.05868): L = -(2/beta) mean log sigmoid(-beta (log pi_theta(y|x)
  - log pi_ref(y|x))) with sequence log-likelihoods and a frozen copy of the starting model as
  reference, plus w * NLL_retain when retain texts are given (open-unlearning's NPO default);
- SimNPO (Fan et al. 2024, arXiv:2410.07163): reference-free NPO on the length-normalised
  likelihood, L = -(2/beta) mean log sigmoid(beta (NLL(y|x)/|y| - delta)), beta = 4.5, delta = 0,
  plus w * NLL_retain; the loss falls as a forget sequence's mean token NLL rises.
- SalUn (Fan et al. 2024, arXiv:2310.12508, ICLR'24): before unlearning, a weight-saliency mask
  keeps the top ``saliency`` fraction of the model's weights by |gradient of the forget loss| over
  the forget set; only those weights change (``salun-graddiff``, ``salun-npo``).

Adding a method is adding an entry to ``METHODS``: its loss, a function of (model, reference,
forget batch, retain batch or None, settings) returning the loss, and the hyper-parameters the
loss reads with their defaults.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import cycle

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from defenses.unlearning.losses import encode_batch, mean_nll, sequence_logprob, sequence_mean_nll
from redteam.core.prompts import PromptFormat
from redteam.core.scoring import max_length_for
from redteam.core.training import finish_training, optimizer_step

Batch = dict[str, torch.Tensor]
Loss = Callable[..., torch.Tensor]


def ga_loss(model, reference, forget: Batch, retain: Batch | None,
            settings: dict) -> torch.Tensor:
    return -mean_nll(model, forget)


def graddiff_loss(model, reference, forget: Batch, retain: Batch | None,
                  settings: dict) -> torch.Tensor:
    loss = -mean_nll(model, forget)
    if retain is not None:
        loss = loss + settings["retain_weight"] * mean_nll(model, retain)
    return loss


def npo_loss(model, reference, forget: Batch, retain: Batch | None,
             settings: dict) -> torch.Tensor:
    beta = settings["beta"]
    with torch.no_grad():
        reference_logp = sequence_logprob(reference, forget)
    log_ratio = sequence_logprob(model, forget) - reference_logp
    loss = -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()
    if retain is not None:
        loss = loss + settings["retain_weight"] * mean_nll(model, retain)
    return loss


def simnpo_loss(model, reference, forget: Batch, retain: Batch | None,
                settings: dict) -> torch.Tensor:
    """SimNPO (arXiv:2410.07163): -(2/beta) mean log sigmoid(beta (NLL/|y| - delta)) + w NLL_r."""
    beta, delta = settings["beta"], settings["delta"]
    margin = sequence_mean_nll(model, forget) - delta
    loss = -(2.0 / beta) * F.logsigmoid(beta * margin).mean()
    if retain is not None:
        loss = loss + settings["retain_weight"] * mean_nll(model, retain)
    return loss


@dataclass(frozen=True)
class Method:
    """An unlearning method: its loss, the hyper-parameters it reads (with defaults), its needs.

    ``saliency``: train only SalUn's salient weights (the ``saliency`` fraction of the model).
    """

    loss: Loss
    defaults: dict[str, float] = field(default_factory=dict)
    reference: bool = False  # needs a frozen copy of the starting model
    uses_retain: bool = False  # adds a retain term when retain texts are given
    needs_retain: bool = False  # without retain texts it would be another method
    saliency: bool = False


METHODS: dict[str, Method] = {
    "ga": Method(ga_loss),
    "graddiff": Method(graddiff_loss, {"retain_weight": 1.0}, uses_retain=True,
                       needs_retain=True),
    "npo": Method(npo_loss, {"beta": 0.1, "retain_weight": 1.0}, reference=True,
                  uses_retain=True),
    "simnpo": Method(simnpo_loss, {"beta": 4.5, "delta": 0.0, "retain_weight": 1.0},
                     uses_retain=True),
    "salun-graddiff": Method(graddiff_loss, {"retain_weight": 1.0, "saliency": 0.5},
                             uses_retain=True, needs_retain=True, saliency=True),
    "salun-npo": Method(npo_loss, {"beta": 0.1, "retain_weight": 1.0, "saliency": 0.5},
                        reference=True, uses_retain=True, saliency=True),
}
HYPER_PARAMETERS = ("beta", "delta", "retain_weight", "saliency")


def method_settings(method: str, **given: float | None) -> dict[str, float]:
    """The hyper-parameters ``method`` reads: its defaults, replaced by the given non-None ones.

    Other keyword arguments (epochs, lr, or a hyper-parameter the method does not read) are
    ignored, so the result is exactly what the method ran with.
    """
    if method not in METHODS:
        raise ValueError(f"unknown unlearning method {method!r} (known: {', '.join(METHODS)})")
    return {name: float(given[name]) if given.get(name) is not None else default
            for name, default in METHODS[method].defaults.items()}


def saliency_mask(model, batches: Iterable[Batch], fraction: float) -> dict[str, torch.Tensor]:
    """SalUn's weight saliency (Fan et al. 2024, arXiv:2310.12508): which weights may change.

    The gradient of the forget loss (the forget NLL, whose |gradient| is GA's) is accumulated
    over ``batches`` at the current weights; the top ``fraction`` of all trainable weights of the
    model by |gradient|, ranked together across tensors, are kept. Returns a boolean mask per
    parameter name (exactly ``round(fraction * total)`` True entries).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"saliency fraction must be in (0, 1], got {fraction}")
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    was_training = model.training
    model.eval()  # no dropout: the mask is a function of the weights and the forget set
    model.zero_grad(set_to_none=True)
    batches = list(batches)
    for batch in batches:
        (mean_nll(model, batch) / len(batches)).backward()
    magnitude = torch.cat([(p.grad.abs() if p.grad is not None else torch.zeros_like(p))
                           .flatten().float() for _, p in named])
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    keep[torch.topk(magnitude, round(fraction * magnitude.numel()), sorted=False).indices] = True
    masks = keep.split([p.numel() for _, p in named])
    return {name: m.view_as(p) for (name, p), m in zip(named, masks, strict=True)}


def training_texts(items: list[dict], prompt_format: PromptFormat | None = None,
                   tokenizer=None) -> list[str]:
    """The texts to unlearn on (or to retain): each question asked zero-shot in the prompt
    format the model will be audited in (plain by default) followed by its answer where the
    format puts it, then the items' texts. Training in another form than the audit's would
    unlearn the facts in a form nobody asks in."""
    fmt = prompt_format or PromptFormat("plain")
    texts = []
    for item in items:
        if item.get("question") and item.get("answer"):
            texts.append(fmt.question(tokenizer, item["question"]) + fmt.answer(item["answer"]))
        if item.get("text"):
            texts.append(item["text"])
    return list(dict.fromkeys(texts))


def _batches(texts: list[str], batch_size: int, rng: random.Random) -> list[list[str]]:
    order = texts[:]
    rng.shuffle(order)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def unlearn(model, tokenizer, forget_texts: list[str], retain_texts: list[str] | None,
            method: str, *, epochs: int = 5, lr: float = 1e-4, batch_size: int = 8,
            beta: float | None = None, delta: float | None = None,
            retain_weight: float | None = None, saliency: float | None = None,
            max_length: int = 256, seed: int = 0, quiet: bool = False):
    """Fine-tune ``model`` to forget ``forget_texts``; returns the updated model (in eval mode).

    Hyper-parameters left at None take the method's default (``METHODS[method].defaults``); those
    the method does not read are ignored. Training goes through ``accelerate.Accelerator`` so
    ``accelerate launch`` scales it.
    """
    from accelerate import Accelerator

    settings = method_settings(method, beta=beta, delta=delta, retain_weight=retain_weight,
                               saliency=saliency)
    spec = METHODS[method]
    if not forget_texts:
        raise ValueError("the forget set is empty: nothing to unlearn")
    if spec.needs_retain and not retain_texts:
        raise ValueError(f"{method} needs retain texts (without them it is plain GA)")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    reference = None
    if spec.reference:
        reference = copy.deepcopy(model).eval()
        reference.requires_grad_(False)
    retain_texts = retain_texts if spec.uses_retain and retain_texts else None
    max_length = max_length_for(model, max_length)

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    # SalUn: no weight decay, so a weight whose gradient is masked to zero gets an update of
    # exactly zero from AdamW (its moments stay 0) and keeps its original value, bit for bit.
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr,
                                  weight_decay=0.0 if spec.saliency else 0.01)
    model, optimizer = accelerator.prepare(model, optimizer)
    if reference is not None:
        reference.to(accelerator.device)

    def to_device(texts: list[str]) -> Batch:
        batch = encode_batch(tokenizer, texts, max_length)
        return {k: v.to(accelerator.device) for k, v in batch.items()}

    hooks = []
    if spec.saliency:
        forget_batches = (to_device(forget_texts[i:i + batch_size])
                          for i in range(0, len(forget_texts), batch_size))
        masks = saliency_mask(model, forget_batches, settings["saliency"])
        hooks = [p.register_hook(lambda grad, mask=masks[name]: grad * mask)
                 for name, p in model.named_parameters() if name in masks]

    model.train()
    steps = epochs * len(_batches(forget_texts, batch_size, rng))
    retain_stream = cycle(_batches(retain_texts, batch_size, rng)) if retain_texts else None
    progress = tqdm(total=steps, desc=f"unlearning ({method})", disable=quiet, leave=False)
    for _ in range(epochs):
        for forget_batch in _batches(forget_texts, batch_size, rng):
            retain_batch = to_device(next(retain_stream)) if retain_stream else None
            loss = spec.loss(model, reference, to_device(forget_batch), retain_batch, settings)
            optimizer_step(accelerator, model.parameters(), optimizer, loss, progress)
    for hook in hooks:
        hook.remove()
    return finish_training(accelerator, model, progress)
