"""Likelihoods the unlearning losses are built from (open-unlearning conventions).

Texts are encoded once into right-padded batches whose labels are -100 on padding; the same
per-sequence log-likelihood serves GA, GradDiff and NPO (and the reference model of NPO), its
length-normalised form SimNPO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from redteam.core.scoring import encode_with_bos, pad_batch


def encode_batch(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """BOS (once) + text + EOS, right-padded; labels mask the padding with -100."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    sequences = [(encode_with_bos(tokenizer, t) + eos)[:max_length] for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids, attention = pad_batch(sequences, pad)
    labels = input_ids.masked_fill(attention == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def token_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each next label token, mask of real label positions), both [batch, len-1]."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_logprob(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log pi(y|x) of each sequence: the sum of its token log-probabilities."""
    picked, _ = token_logprobs(model, batch)
    return picked.sum(-1)


def sequence_mean_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """NLL(y|x)/|y| of each sequence: its mean token negative log-likelihood (SimNPO)."""
    picked, mask = token_logprobs(model, batch)
    return -picked.sum(-1) / mask.sum(-1).clamp_min(1)


def mean_nll(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token negative log-likelihood over the batch (the usual LM loss)."""
    picked, mask = token_logprobs(model, batch)
    return -picked.sum() / mask.sum().clamp_min(1)
