"""Asking an LLM questions through a prompt format, and choosing the format it answers in.

A fixed prompt form is wrong for some models: an instruct model asked in the plain
"Question: …\\nAnswer:" form can look as if it forgot everything while it still answers through
its chat template, and a model trained on single QA documents can fail a few-shot prompt it
answers zero-shot. ``calibrate_prompt_format`` therefore scores the candidate formats on the
*retain* questions (knowledge the model is supposed to keep) and the audit asks in the best one;
when even the best one gets almost no retain answer right, the knowledge probes cannot tell
forgetting from not understanding the question, and their passes become ``inconclusive``
(docs/architecture.md, "The life of an audit").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np

from redteam.core.data import AuditData, AuditItem
from redteam.core.metrics import contains_answer
from redteam.core.prompts import PromptFormat
from redteam.core.settings import integer, rate
from redteam.core.text_scoring import DEFAULT_PROFILE, ScoringProfile

PROMPT_SETTINGS = {
    "shots": integer(3),  # few-shot examples of the few-shot candidates
    "calibration_items": integer(64, low=1),  # retain questions the candidates are scored on
    "min_retain_score": rate(0.2),  # retain ROUGE-L recall below which answers are unmeasurable
    "max_new_tokens": integer(32, low=1),
}


def pick_shots(item: AuditItem, pool: list[AuditItem], count: int,
               seed: int) -> list[tuple[str, str]]:
    """Solved examples for the few-shot prompt: other items' QA, never the asked item's."""
    candidates = [p for p in pool if p.question != item.question and p.subject != item.subject]
    rng = random.Random(f"{seed}:{item.question}")
    return [(p.question, p.answer) for p in rng.sample(candidates, min(count, len(candidates)))]


def shot_pool(data: AuditData) -> list[AuditItem]:
    """Where few-shot examples come from: the retain items, else the holdout items."""
    return data.with_fields("retain", "question", "answer") or data.with_fields(
        "holdout", "question", "answer")


def ask_questions(scorer, tokenizer, fmt: PromptFormat, items: list[AuditItem],
                  pool: list[AuditItem], shots: int, seed: int, max_new_tokens: int,
                  profile: ScoringProfile = DEFAULT_PROFILE) -> list[dict]:
    """Ask every item's question in ``fmt`` (greedy, batched, memoised by ``scorer``) and score
    each answer by ``profile`` (the benchmark's ROUGE-L) and containment of the expected
    answer."""
    prompts = [fmt.question(tokenizer, item.question, pick_shots(item, pool, shots, seed))
               for item in items]
    outputs = scorer.generate(prompts, max_new_tokens=max_new_tokens, stop=fmt.stop_strings)
    return [{"line": item.line, "subject": item.subject, "input": item.question,
             **answer_row(fmt.cut(output), item.answer, profile)}
            for item, output in zip(items, outputs)]


def answer_row(answer: str, expected: str, profile: ScoringProfile = DEFAULT_PROFILE) -> dict:
    """One answer scored against the expected one: the columns every answer row has. The
    score's column is the profile's (``rouge_l_recall``, or ``rouge_l_f1`` for MUSE)."""
    return {"output": answer, "expected": expected,
            profile.key: profile.score(answer, expected),
            "contains": float(contains_answer(answer, [expected]))}


def mean_score(rows: list[dict], key: str = "rouge_l_recall") -> float:
    """The mean of the rows' ``key`` column (a scoring profile's, or any per-row number).

    One helper for every probe, so that a split with no rows reads the same everywhere: NaN
    (not measured), without numpy's empty-slice warning.
    """
    return float(np.mean([r[key] for r in rows])) if rows else float("nan")


@dataclass(frozen=True)
class PromptCalibration:
    """Which prompt format an audit asks in, and whether the model answers in it.

    ``candidates`` are (format name, retain ROUGE-L recall) in the order tried; ``model`` is the
    label of the model they were scored on ("reference" or "target"); ``items`` how many retain
    questions; ``retain_score`` is the chosen format's. ``measurable`` is False when that score
    is under ``min_retain_score`` (None when there were no retain questions to check on).
    """

    chosen: PromptFormat
    requested: str
    model: str = ""
    items: int = 0
    candidates: tuple[tuple[str, float], ...] = ()
    retain_score: float | None = None
    min_retain_score: float = 0.2

    @property
    def measurable(self) -> bool | None:
        if self.retain_score is None:
            return None
        return self.retain_score >= self.min_retain_score

    @property
    def reason(self) -> str:
        """Why answers in this format say nothing (empty when they do)."""
        if self.measurable is not False:
            return ""
        return (f"the {self.model} model answers almost none of {self.items} retain questions "
                f"in the prompt format used ({self.chosen.name}: retain ROUGE-L recall "
                f"{self.retain_score:.3f}, under {self.min_retain_score}), so a low score on "
                f"the forget set cannot be told from not understanding the question")

    def to_record(self) -> dict:
        """The plain-data form kept in the run record."""
        return {
            "requested": self.requested, "model": self.model, "items": self.items,
            "candidates": [{"name": name, "retain_score": round(score, 4)}
                           for name, score in self.candidates],
            "retain_score": None if self.retain_score is None else round(self.retain_score, 4),
            "min_retain_score": self.min_retain_score,
            "measurable": self.measurable,
        }


def format_candidates(requested: PromptFormat, tokenizer, shots: int) -> list[PromptFormat]:
    """The formats ``auto`` tries, in order of preference on a tie: the chat template (zero- and
    few-shot) when the tokenizer has one, then plain few-shot (the MUSE form) and zero-shot. A
    fixed format is its own single candidate."""
    if requested.style != "auto":
        return [requested]
    count = shots if requested.shots is None else requested.shots
    styles = (["chat"] if getattr(tokenizer, "chat_template", None) else []) + ["plain"]
    candidates = []
    for style in styles:
        counts = [0, count] if style == "chat" else [count, 0]
        for n in dict.fromkeys(counts):
            candidates.append(replace(requested, style=style, shots=n))
    return candidates


def calibrate_prompt_format(requested: PromptFormat, data: AuditData | None, model,
                            model_label: str, scorer, seed: int,
                            settings: dict) -> PromptCalibration:
    """Score each candidate format on up to ``calibration_items`` retain questions asked of
    ``model`` (the reference when one is given, else the target) and keep the best.

    ``settings`` holds ``PROMPT_SETTINGS``' values. Without retain questions ``auto`` falls back to
    the chat template when there is one, else plain, and nothing is measured.
    """
    candidates = format_candidates(requested, model.tokenizer, settings["shots"])
    retain = data.with_fields("retain", "question", "answer") if data is not None else []
    if not retain:
        return PromptCalibration(candidates[0], requested.name, model_label,
                                 min_retain_score=settings["min_retain_score"])
    items = AuditData(data.path, retain).sample(settings["calibration_items"], seed).items
    pool = shot_pool(data)
    scores = []
    for fmt in candidates:
        shots = settings["shots"] if fmt.shots is None else fmt.shots
        rows = ask_questions(scorer, model.tokenizer, fmt, items, pool, shots, seed,
                             settings["max_new_tokens"])
        scores.append(mean_score(rows))
    best = int(np.argmax(scores))
    return PromptCalibration(
        candidates[best], requested.name, model_label, len(items),
        tuple((fmt.name, score) for fmt, score in zip(candidates, scores)),
        scores[best], settings["min_retain_score"])
