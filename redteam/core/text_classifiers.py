"""A text classifier as a function of one tensor, so one training or unlearning loop serves texts
and images alike.

An image classifier is wrapped as ``PixelClassifier`` (images ``[N, 3, H, W]`` → logits); a
Hugging Face ``*ForSequenceClassification`` model is wrapped here as ``TokenClassifier``, whose
input is the tokenised texts packed into one tensor ``[N, 2, L]`` (token ids, attention mask).
Indexing a batch, moving it to a device and calling the model then look the same for both, which
is what lets EBYD's clean unlearning, its metrics and the trigger fine-tuning run unchanged on
text (``defenses.ebyd``). Trigger words are inserted into texts here too, at word boundaries.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

MAX_TOKENS = 128  # texts are truncated to this many tokens: short filters' inputs


class TokenClassifier(nn.Module):
    """An HF ``*ForSequenceClassification`` model on packed token ids; returns logits."""

    def __init__(self, hf_model: Any, padding_side: str = "right") -> None:
        super().__init__()
        self.hf_model = hf_model
        self.padding_side = padding_side

    @property
    def num_classes(self) -> int:
        return int(self.hf_model.config.num_labels)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        ids, mask = packed[:, 0], packed[:, 1]
        if self.padding_side == "right" and len(mask):  # drop the batch's all-padding columns
            keep = max(1, int(mask.sum(dim=1).max()))
            ids, mask = ids[:, :keep], mask[:, :keep]
        return self.hf_model(input_ids=ids, attention_mask=mask).logits


def encode_texts(tokenizer: Any, texts: list[str], max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """Token ids and attention masks of ``texts``, padded to one length and stacked:
    ``[N, 2, L]`` (long). Padding is on the side the tokenizer pads."""
    if not texts:
        return torch.zeros(0, 2, 1, dtype=torch.long)
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens,
                      return_tensors="pt")
    return torch.stack([batch["input_ids"], batch["attention_mask"]], dim=1).long()


def insert_words(text: str, words: str, rng: random.Random) -> str:
    """``text`` with ``words`` inserted between two of its words (or at either end), at a
    position drawn from ``rng``: how rare-word and phrase triggers are planted."""
    parts = text.split()
    position = rng.randint(0, len(parts))
    return " ".join([*parts[:position], words, *parts[position:]])


def with_trigger(texts: list[str], trigger: str, seed: int = 0) -> list[str]:
    """Each text with ``trigger`` inserted at a seeded random word position."""
    rng = random.Random(seed)
    return [insert_words(text, trigger, rng) for text in texts]
