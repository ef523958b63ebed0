"""Trigger-word and trigger-phrase recovery for text classifiers: what inserted text flips clean
texts to a label?

A rare-word backdoor ("cf", "mn", "tq"; Kurita et al. 2020, "Weight Poisoning Attacks on
Pre-trained Models") makes one token override the rest of the text; an AddSent backdoor (Dai
et al. 2019, arXiv:1905.12457) does the same with a fixed sentence. A classifier fine-tuned
from a pretrained encoder spreads the backdoor over neighbouring rare tokens, which become
partial triggers, and a first-order proposal alone can rank the planted token out of its top 20.
So the search verifies far more candidates than it proposes to keep, and ranks by measured
effect, never by the gradient. For every label:

1. **Propose** (HotFlip: Ebrahimi et al. 2018, arXiv:1712.06751): a placeholder token is
   inserted at the start, the middle and the end of each clean text of the other labels; the
   gradient of the label's cross-entropy at the placeholder, averaged over the texts, scores
   every whole-word vocabulary token by the first-order change of the loss. This runs on the
   model as given and, when given, on the exposed model (EBYD, arXiv:2410.19427, where the
   backdoor stands out); the union of each view's ``candidates`` best tokens is proposed.
2. **Screen** every proposal by insertion into a few of those texts (one batched pass), scored
   by the mean probability the model gives the label.
3. **Verify** the ``verify`` best by insertion into every text (at most ``max_texts``): the flip
   rate is the share then assigned to the label; ties are broken by the mean probability.
4. **Grow phrases** by beam search from the best verified words: the ``beam`` best phrases of
   each length are extended by one of the best words, up to ``phrase_words`` words, screened and
   the survivors verified as in 2-3.
5. **Control**: ``control_words`` whole-word tokens drawn at random from the vocabulary are
   inserted the same way. Their flip rates are what an arbitrary rare word does to the label; a
   planted trigger stands far above them.

A word of the trusted clean texts is a feature of the task, not a hidden trigger (inserting
"striker" into a headline may rightly make it sports): such candidates are kept but marked
``in_clean_texts``. Syntactic (Qi et al. 2021, arXiv:2105.12400) and style triggers change no
word and are out of this search's reach; ``TextTriggerScan.shapes`` says what was searched.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defenses.ebyd.metrics import model_device, predict
from redteam.core.text_classifiers import encode_texts, with_trigger

POSITIONS = ("start", "middle", "end")  # where the placeholder goes for the proposal step
# A candidate means its label when it is more related to it than this share of random words.
RELATEDNESS_SAMPLE, RELATEDNESS_QUANTILE = 200, 0.95


@dataclass
class TriggerCandidate:
    """One verified candidate: the words inserted, the share of other labels' texts they send
    to ``label``, the mean probability of ``label`` over those texts, the best rank a gradient
    view gave it (None for phrases grown by the beam), and whether every word occurs in the
    clean texts."""

    words: str
    label: int
    flip_rate: float
    probability: float
    proposal_rank: int | None
    in_clean_texts: bool
    relatedness: float = 0.0
    related_to_label: bool = False

    @property
    def suspect(self) -> bool:
        """Neither a word of the clean texts nor one that means the label: a trigger candidate."""
        return not (self.in_clean_texts or self.related_to_label)


@dataclass
class LabelScan:
    """One label's search: the verified candidates, best first; the texts they were inserted
    into (the other labels' clean texts the model does not already assign to the label); the
    flip rates of the random control words; how many proposals were screened; and the
    relatedness above which a candidate means the label (the control words' largest; None when
    relatedness was not judged)."""

    label: int
    candidates: list[TriggerCandidate]
    texts: list[str]
    control_flip_rates: list[float] = field(default_factory=list)
    screened: int = 0
    relatedness_bound: float | None = None

    @property
    def texts_tested(self) -> int:
        return len(self.texts)

    @property
    def best(self) -> TriggerCandidate | None:
        """The best suspect: neither in the clean texts nor meaning the label."""
        return next((c for c in self.candidates if c.suspect), None)

    @property
    def best_flip_rate(self) -> float:
        return self.best.flip_rate if self.best is not None else 0.0

    @property
    def control_flip_rate(self) -> float:
        """The largest flip rate of a random control word (0 when none was tried)."""
        return max(self.control_flip_rates, default=0.0)


@dataclass
class TextTriggerScan:
    """Every label's scan, the vocabulary's whole-word token count, and the trigger shapes
    searched and not searched (said in the report)."""

    scans: dict[int, LabelScan]
    searched_tokens: int
    shapes: str
    not_searched: str = "syntactic and style triggers (they change no word)"

    def rank_of(self, words: str, label: int) -> int | None:
        """1-based rank of ``words`` among ``label``'s verified suspects, or None."""
        suspects = [c for c in self.scans[label].candidates if c.suspect]
        for rank, candidate in enumerate(suspects, start=1):
            if candidate.words == words.strip().lower():
                return rank
        return None

    @property
    def verified(self) -> int:
        """How many candidates were verified over all labels."""
        return sum(len(scan.candidates) for scan in self.scans.values())

    @property
    def screened(self) -> int:
        """How many proposals were screened over all labels."""
        return sum(scan.screened for scan in self.scans.values())

    def reference(self, label: int) -> float:
        """What ``label``'s best suspect is compared with: the largest of the other labels'
        best suspects and of this label's random control words. As Neural Cleanse (Wang et al.
        2019) reads its trigger sizes, a backdoor label is an outlier among the labels."""
        others = [scan.best_flip_rate for other, scan in self.scans.items() if other != label]
        return max([*others, self.scans[label].control_flip_rate])

    def margin(self, label: int) -> float:
        """How far ``label``'s best suspect flips above its reference."""
        return self.scans[label].best_flip_rate - self.reference(label)


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
                      where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each text with ``placeholder`` inserted after its first token (``start``), before its
    last real token (``end``) or half-way (``middle``), and the positions."""
    rows, positions = [], []
    for ids, mask in zip(packed[:, 0], packed[:, 1]):
        length = int(mask.sum())
        position = {"start": 1, "middle": max(1, length // 2), "end": max(1, length - 1)}[where]
        ids = torch.cat([ids[:position], torch.tensor([placeholder]), ids[position:]])
        mask = torch.cat([mask[:position], torch.tensor([1]), mask[position:]])
        rows.append(torch.stack([ids, mask]))
        positions.append(position)
    return torch.stack(rows), torch.tensor(positions)


def gradient_scores(model: nn.Module, packed: torch.Tensor, label: int, placeholder: int,
                    where: str = "middle", batch_size: int = 64) -> torch.Tensor:
    """HotFlip scores ``[vocabulary]``: minus the gradient of the cross-entropy towards
    ``label`` at a placeholder inserted at ``where``, averaged over the texts, dotted with every
    token's input embedding (larger: inserting the token lowers the loss more). ``model`` is a
    ``TokenClassifier``; its weights are not changed."""
    hf_model = model.hf_model
    embeddings = hf_model.get_input_embeddings()
    device = model_device(model)
    inserted, positions = _with_placeholder(packed, placeholder, where)
    total = torch.zeros(embeddings.weight.shape[1], device=device)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(inserted), batch_size):
            ids = inserted[start:start + batch_size, 0].to(device)
            mask = inserted[start:start + batch_size, 1].to(device)
            at = positions[start:start + batch_size].to(device)
            vectors = embeddings(ids).detach().requires_grad_(True)
            logits = hf_model(inputs_embeds=vectors, attention_mask=mask).logits
            loss = F.cross_entropy(logits, torch.full((len(ids),), label, device=device),
                                   reduction="sum")
            (gradient,) = torch.autograd.grad(loss, vectors)
            total += gradient[torch.arange(len(ids), device=device), at].sum(dim=0)
    finally:
        model.train(was_training)
    with torch.no_grad():
        return -(embeddings.weight @ (total / max(1, len(inserted)))).float().cpu()


@torch.no_grad()
def insertion_effects(model: nn.Module, tokenizer: Any, texts: list[str], phrases: list[str],
                      label: int, seed: int = 0,
                      batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Each phrase inserted at the same seeded word positions of ``texts``: the share of texts
    ``model`` then assigns to ``label`` (flip rate) and the mean probability of ``label``, both
    ``[len(phrases)]``. All insertions run through the model in large batches."""
    if not texts or not phrases:
        return np.zeros(len(phrases)), np.zeros(len(phrases))
    inserted = [text for phrase in phrases for text in with_trigger(texts, phrase, seed)]
    device = model_device(model)
    was_training = model.training
    model.eval()
    hits, probabilities = [], []
    try:
        for start in range(0, len(inserted), batch_size):
            packed = encode_texts(tokenizer, inserted[start:start + batch_size]).to(device)
            logits = model(packed).float()
            hits.append((logits.argmax(dim=1) == label).cpu())
            probabilities.append(logits.softmax(dim=1)[:, label].cpu())
    finally:
        model.train(was_training)
    shape = (len(phrases), len(texts))
    return (torch.cat(hits).float().view(shape).mean(dim=1).numpy(),
            torch.cat(probabilities).view(shape).mean(dim=1).numpy())


def flip_rate(model: nn.Module, tokenizer: Any, texts: list[str], words: str, label: int,
              seed: int = 0) -> float:
    """Share of ``texts`` that ``model`` assigns to ``label`` once ``words`` is inserted at a
    seeded random word position of each."""
    if not texts:
        return float("nan")
    return float(insertion_effects(model, tokenizer, texts, [words], label, seed)[0][0])


@dataclass
class TriggerSearch:
    """The search of the module docstring, one label at a time.

    ``model`` (the model as given) verifies and proposes; ``exposed`` (when given) proposes too.
    Settings: ``candidates`` best tokens per gradient view, ``screen_texts`` texts to screen
    them on, ``verify`` best screened words verified on at most ``max_texts`` texts,
    ``phrase_words`` (1: no phrases) and ``beam`` for the phrase search, ``control_words``
    random words for the control; ``relatedness`` (a ``LabelRelatedness``) judges which
    candidates mean the label (none do, when None).
    """

    model: nn.Module
    tokenizer: Any
    exposed: nn.Module | None = None
    candidates: int = 100
    screen_texts: int = 16
    verify: int = 32
    max_texts: int = 128
    phrase_words: int = 4
    beam: int = 4
    control_words: int = 20
    relatedness: Callable[[list[str], int], np.ndarray] | None = None
    seed: int = 0

    def scan(self, texts: list[str], labels: list[int], num_classes: int,
             progress: Any = None) -> TextTriggerScan:
        """Search every label (module docstring); ``progress`` (a tqdm bar) advances a label
        at a time."""
        # 1. The vocabulary's whole words, the clean texts' words, the model's predictions.
        self.token_ids_, self.token_words_ = insertable_tokens(self.tokenizer)
        self.clean_vocabulary_ = {word.lower() for text in texts for word in text.split()}
        self.clean_vocabulary_ |= {piece.lower() for text in texts
                                   for piece in self.tokenizer.tokenize(text)}
        predicted = predict(self.model, encode_texts(self.tokenizer, texts)).tolist()
        scans = {}
        for label in range(num_classes):
            # 2. The other labels' texts not already assigned to the label.
            others = [t for t, y, p in zip(texts, labels, predicted) if y != label and p != label]
            if len(others) > self.max_texts:
                others = random.Random(self.seed + label).sample(others, self.max_texts)
            scans[label] = self.scan_label(label, others) if others else LabelScan(label, [], [])
            if progress is not None:
                progress.update(1)
        phrases = (f", phrases of 2 to {self.phrase_words} words (beam {self.beam})"
                   if self.phrase_words > 1 else "")
        return TextTriggerScan(scans, len(self.token_ids_), f"single whole-word tokens{phrases}")

    def scan_label(self, label: int, texts: list[str]) -> LabelScan:
        """Steps 1-5 of the module docstring for one label, on ``texts``."""
        proposals = self.propose(label, texts)
        screen = texts[:self.screen_texts]
        words = list(proposals)
        _, screened = insertion_effects(self.model, self.tokenizer, screen, words, label,
                                        self.seed)
        kept = [words[i] for i in np.argsort(-screened, kind="stable")[:self.verify]]
        control, bound = self.control(label, texts, proposals)
        singles = self.verified(label, texts, {w: proposals[w] for w in kept}, bound)
        grown = self.grow(label, screen, [c for c in singles if c.suspect])
        phrases = self.verified(label, texts, dict.fromkeys(grown), bound)
        candidates = sorted(singles + phrases, key=lambda c: (
            not c.suspect, -c.flip_rate, len(c.words.split()), -c.probability))
        return LabelScan(label, candidates, texts, control, len(words), bound)

    def propose(self, label: int, texts: list[str]) -> dict[str, int]:
        """Whole words proposed by any gradient view, with the best rank a view gave them."""
        packed = encode_texts(self.tokenizer, texts)
        placeholder = next(t for t in (self.tokenizer.mask_token_id, self.tokenizer.unk_token_id,
                                       int(self.token_ids_[0])) if t is not None)
        views = [self.model] + ([self.exposed] if self.exposed is not None else [])
        proposals: dict[str, int] = {}
        for view in views:
            for where in POSITIONS:
                scores = gradient_scores(view, packed, label, placeholder, where)[self.token_ids_]
                best = torch.topk(scores, min(self.candidates, len(scores))).indices.tolist()
                for rank, index in enumerate(best, start=1):
                    word = self.token_words_[index]
                    proposals[word] = min(rank, proposals.get(word, rank))
        return proposals

    def verified(self, label: int, texts: list[str], proposals: dict[str, int | None],
                 bound: float | None) -> list[TriggerCandidate]:
        """Each proposal's measured effect on ``texts``, and whether it means the label (its
        relatedness above ``bound``)."""
        words = list(proposals)
        flips, probabilities = insertion_effects(self.model, self.tokenizer, texts, words, label,
                                                 self.seed)
        related = (self.relatedness(words, label) if self.relatedness is not None
                   else np.zeros(len(words)))
        return [TriggerCandidate(w, label, round(float(f), 6), round(float(p), 6), proposals[w],
                                 all(part in self.clean_vocabulary_ for part in w.split()),
                                 round(float(r), 6), bound is not None and bool(r > bound))
                for w, f, p, r in zip(words, flips, probabilities, related)]

    def grow(self, label: int, screen: list[str], singles: list[TriggerCandidate]) -> list[str]:
        """Phrases grown by beam search from the best verified words, each length's ``beam``
        best by their screened probability."""
        if self.phrase_words < 2 or not singles:
            return []
        ranked = sorted(singles, key=lambda c: (-c.flip_rate, -c.probability))
        pool = [c.words for c in ranked[:2 * self.beam]]
        beam, grown = [c.words for c in ranked[:self.beam]], []
        for _ in range(2, self.phrase_words + 1):
            longer = list(dict.fromkeys(f"{phrase} {word}" for phrase in beam for word in pool
                                        if word not in phrase.split()))
            if not longer:
                break
            _, scores = insertion_effects(self.model, self.tokenizer, screen, longer, label,
                                          self.seed)
            beam = [longer[i] for i in np.argsort(-scores, kind="stable")[:self.beam]]
            grown += beam
        return grown

    def control(self, label: int, texts: list[str],
                proposals: dict[str, int]) -> tuple[list[float], float | None]:
        """Flip rates of ``control_words`` random whole words (none proposed, none in the clean
        texts), inserted the same way; and the relatedness bound: the
        ``RELATEDNESS_QUANTILE`` of ``RELATEDNESS_SAMPLE`` random words' relatedness to the
        label, above which a candidate means the label (None without a relatedness judge)."""
        pool = sorted(set(self.token_words_) - set(proposals) - self.clean_vocabulary_)
        sample = random.Random(self.seed + 1000 + label).sample(
            pool, min(max(self.control_words, RELATEDNESS_SAMPLE), len(pool)))
        words = sample[:self.control_words]
        flips, _ = insertion_effects(self.model, self.tokenizer, texts, words, label, self.seed)
        bound = (float(np.quantile(self.relatedness(sample, label), RELATEDNESS_QUANTILE))
                 if self.relatedness is not None and sample else None)
        return [round(float(f), 6) for f in flips], bound
