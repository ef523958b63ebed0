"""Trigger-word recovery for text classifiers: which inserted word flips clean texts to a label?

A rare-word backdoor ("cf", "mn", "tq"; Kurita et al. 2020, "Weight Poisoning Attacks on
Pre-trained Models") makes one token override the rest of the text. It is searched for in two
steps, for every label:

1. **Propose** (gradient-guided, HotFlip: Ebrahimi et al. 2018, arXiv:1712.06751): a placeholder
   token is inserted at a random position of each clean text of the other labels; the gradient
   of the label's cross-entropy at that position, averaged over the texts, scores every
   vocabulary token by the first-order change of the loss were it put there. The tokens the
   gradient favours most are the candidates; pairs of the best ones make two-word candidates.
   EBYD (arXiv:2410.19427) runs this on the *exposed* model, where the backdoor stands out.
2. **Verify** by insertion: each candidate is inserted as a word at a random position of every
   clean text of another label that the model as given does not already assign to the label,
   and the flip rate is the share it then assigns to the label. Only verified rates are
   reported; the gradient proposes, it never decides.

A word that occurs in the trusted clean texts is a feature of the task, not a hidden trigger
(inserting "striker" into a headline may rightly make it sports); such candidates are kept but
marked ``in_clean_texts``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defenses.ebyd.metrics import model_device, predict
from redteam.core.text_classifiers import encode_texts, with_trigger


@dataclass
class TriggerCandidate:
    """One verified candidate: the words inserted, the share of other labels' texts they send
    to ``label``, the gradient's score (higher is more promising), and whether the words occur
    in the clean texts."""

    words: str
    label: int
    flip_rate: float
    gradient_score: float
    in_clean_texts: bool


@dataclass
class LabelScan:
    """The verified candidates for one label, best first, and the texts they were inserted
    into (the other labels' clean texts the model does not already assign to the label)."""

    label: int
    candidates: list[TriggerCandidate]
    texts: list[str]

    @property
    def texts_tested(self) -> int:
        return len(self.texts)

    @property
    def best(self) -> TriggerCandidate | None:
        """The best candidate not already in the clean texts (a trigger, not a task word)."""
        return next((c for c in self.candidates if not c.in_clean_texts), None)


@dataclass
class TextTriggerScan:
    """Every label's scan; ``flagged`` are labels whose best candidate reaches the threshold."""

    scans: dict[int, LabelScan]
    flip_threshold: float
    searched_tokens: int
    flagged: list[int] = field(default_factory=list)

    def rank_of(self, words: str, label: int) -> int | None:
        """1-based rank of ``words`` among ``label``'s verified candidates, or None."""
        for rank, candidate in enumerate(self.scans[label].candidates, start=1):
            if candidate.words == words.strip().lower():
                return rank
        return None


def insertable_tokens(tokenizer: Any) -> tuple[torch.Tensor, list[str]]:
    """Ids of the vocabulary tokens that are whole words (no special tokens, no WordPiece
    continuations, nothing that decodes to blank or to several words), and their text."""
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    words = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    keep = [i for i, (piece, word) in enumerate(zip(pieces, words))
            if i not in special and piece is not None and not piece.startswith("##")
            and word.strip() and len(word.split()) == 1 and word.strip().isprintable()]
    return torch.tensor(keep), [words[i].strip().lower() for i in keep]


def _with_placeholder(packed: torch.Tensor, placeholder: int,
                      rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Each text with ``placeholder`` inserted between two of its tokens (after the first,
    before the last real token), and the positions."""
    rows, positions = [], []
    for ids, mask in zip(packed[:, 0], packed[:, 1]):
        length = int(mask.sum())
        position = rng.randint(1, max(1, length - 1))
        ids = torch.cat([ids[:position], torch.tensor([placeholder]), ids[position:]])
        mask = torch.cat([mask[:position], torch.tensor([1]), mask[position:]])
        rows.append(torch.stack([ids, mask]))
        positions.append(position)
    return torch.stack(rows), torch.tensor(positions)


def gradient_scores(model: nn.Module, packed: torch.Tensor, label: int, placeholder: int,
                    seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """HotFlip scores ``[vocabulary]``: minus the gradient of the cross-entropy towards
    ``label`` at an inserted placeholder, averaged over the texts, dotted with every token's
    input embedding (larger: inserting the token lowers the loss more). ``model`` is a
    ``TokenClassifier``; its weights are not changed."""
    hf_model = model.hf_model
    embeddings = hf_model.get_input_embeddings()
    device = model_device(model)
    inserted, positions = _with_placeholder(packed, placeholder, random.Random(seed))
    total = torch.zeros(embeddings.weight.shape[1], device=device)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(inserted), batch_size):
            ids = inserted[start:start + batch_size, 0].to(device)
            mask = inserted[start:start + batch_size, 1].to(device)
            where = positions[start:start + batch_size].to(device)
            vectors = embeddings(ids).detach().requires_grad_(True)
            logits = hf_model(inputs_embeds=vectors, attention_mask=mask).logits
            loss = F.cross_entropy(logits, torch.full((len(ids),), label, device=device),
                                   reduction="sum")
            (gradient,) = torch.autograd.grad(loss, vectors)
            total += gradient[torch.arange(len(ids), device=device), where].sum(dim=0)
    finally:
        model.train(was_training)
    with torch.no_grad():
        return -(embeddings.weight @ (total / max(1, len(inserted)))).float().cpu()


def flip_rate(model: nn.Module, tokenizer: Any, texts: list[str], words: str, label: int,
              seed: int = 0) -> float:
    """Share of ``texts`` that ``model`` assigns to ``label`` once ``words`` is inserted at a
    seeded random word position of each."""
    if not texts:
        return float("nan")
    predicted = predict(model, encode_texts(tokenizer, with_trigger(texts, words, seed)))
    return float((predicted == label).float().mean())


def scan_text_triggers(model: nn.Module, tokenizer: Any, texts: list[str], labels: list[int],
                       num_classes: int, *, proposer: nn.Module | None = None,
                       candidates: int = 20, pair_from: int = 4, flip_threshold: float = 0.9,
                       seed: int = 0) -> TextTriggerScan:
    """Search every label for a trigger word (module docstring). ``model`` (the model as
    given) verifies; ``proposer`` (the exposed model; ``model`` when None) proposes the
    ``candidates`` best tokens per label; the ``pair_from`` best verified single words are
    also tried as ordered pairs."""
    proposer = proposer if proposer is not None else model
    token_ids, token_words = insertable_tokens(tokenizer)
    clean_vocabulary = {word.lower() for text in texts for word in text.split()}
    clean_vocabulary |= {piece.lower() for text in texts for piece in tokenizer.tokenize(text)}
    predicted = predict(model, encode_texts(tokenizer, texts)).tolist()
    placeholder = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else (
        tokenizer.unk_token_id if tokenizer.unk_token_id is not None else int(token_ids[0]))
    scans = {}
    for label in range(num_classes):
        others = [t for t, y, p in zip(texts, labels, predicted) if y != label and p != label]
        if not others:
            scans[label] = LabelScan(label, [], [])
            continue
        scores = gradient_scores(proposer, encode_texts(tokenizer, others), label, placeholder,
                                 seed)[token_ids]
        best = torch.topk(scores, min(candidates, len(token_ids))).indices.tolist()
        proposals = {token_words[i]: float(scores[i]) for i in best}
        verified = _verify(model, tokenizer, others, label, proposals, clean_vocabulary, seed)
        singles = [c for c in verified if " " not in c.words][:pair_from]
        pairs = {f"{a.words} {b.words}": a.gradient_score + b.gradient_score
                 for a, b in permutations(singles, 2)}
        verified += _verify(model, tokenizer, others, label, pairs, clean_vocabulary, seed)
        verified.sort(key=lambda c: (-c.flip_rate, len(c.words.split()), -c.gradient_score))
        scans[label] = LabelScan(label, verified, others)
    flagged = [label for label, scan in scans.items()
               if scan.best is not None and scan.best.flip_rate >= flip_threshold]
    return TextTriggerScan(scans, flip_threshold, len(token_ids), flagged)


def _verify(model: nn.Module, tokenizer: Any, texts: list[str], label: int,
            proposals: dict[str, float], clean_vocabulary: set[str],
            seed: int) -> list[TriggerCandidate]:
    return [TriggerCandidate(words, label, flip_rate(model, tokenizer, texts, words, label, seed),
                             score, all(w in clean_vocabulary for w in words.split()))
            for words, score in proposals.items()]
