"""Train the prompt guard on an audit JSONL and measure it on prompts it has not seen.

The guard is a ``BertForSequenceClassification`` (labels ``allow`` / ``flag``) whose encoder is
the frozen, pretrained all-MiniLM-L6-v2; only BERT's head (pooler dense + tanh, then the
classifier layer) is trained, on the ``[CLS]`` states of the training prompts computed once. That
is the recipe of ECO prompts (Liu et al. 2024, arXiv:2406.07933: a prompt classifier in front of
the model detects prompts about the unlearned subjects) and of O3 (Gao et al. 2024,
arXiv:2407.10223: a detector on pretrained embeddings of the forget data), cut down to what a
few hundred prompts can teach without over-fitting an encoder.

Steps (``train_guard``): read the audit data; build the prompts (positives: every forget item's
question and text, and each forget subject's name and aliases; negatives: the same from retain
items); encode them once; cross-validate; train the final head on everything; check that the
assembled model's own forward pass gives the head's decisions; save the folder atomically with
``guard.json`` (provenance and figures) and ``guard-eval.jsonl`` (labelled prompts for
``redteam audit GUARD --suite adversarial``).

What the held-out figures mean: folds are made of audit *items*, dealt per subject, so each
subject's items are spread over the folds and its name and aliases are always in training. A
held-out prompt is therefore about a subject seen in training, phrased in a way not seen (a
question or sentence about another fact of it, or an RWKU rewrite of a held-out question), and
not about an unseen subject (those are the holdout figure).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from defenses.guard.encoder import (
    ENCODER_NAME,
    PACKAGE,
    cls_states,
    encoder_dir,
    encoder_hashes,
    has_pooler,
    load_encoder,
)
from redteam.core.data import AuditData, load_audit_jsonl
from redteam.core.errors import InputError
from redteam.core.fileio import atomic_write_json, atomic_write_text, sha256_file
from redteam.core.outputs import staged_output
from redteam.core.prompts import few_shot_prompt
from redteam.core.training import check_trained

LABELS = ("allow", "flag")
ALLOW, FLAG = 0, 1
THRESHOLD = 0.5  # P(flag) at or above it flags: the model's argmax, so audits see the same rule
GUARD_FILE = "guard.json"
EVAL_FILE = "guard-eval.jsonl"
REFERENCES = ("arXiv:2406.07933 (ECO prompts)", "arXiv:2407.10223 (O3)",
              "arXiv:2406.10890 (RWKU rewrites)")
FOLDS_PROTOCOL = (
    "audit items dealt per subject into the folds (stratified by subject): every subject's "
    "items are spread over the folds and its name and aliases are always trained on, so a "
    "held-out prompt is about a subject seen in training, phrased in a way not seen"
)


@dataclass(frozen=True)
class HeadSettings:
    """How the head is fitted: full-batch Adam with L2 weight decay on the cached states."""

    steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class Prompt:
    """One prompt with its label and where it comes from (``line``: None for subject names)."""

    text: str
    label: int
    source: str  # question | text | subject | alias | an RWKU attack type
    line: int | None


# ------------------------------------------------------------------------------------- prompts


def item_prompts(data: AuditData, split: str, label: int) -> list[Prompt]:
    """Every ``split`` item's question and text, then each subject's name and aliases."""
    prompts = [Prompt(getattr(item, field), label, field, item.line)
               for item in data.split(split) for field in ("question", "text")
               if getattr(item, field).strip()]
    names: dict[str, str] = {}
    for item in data.split(split):
        if item.subject.strip():
            names.setdefault(item.subject, "subject")
        for alias in item.aliases:
            if alias.strip():
                names.setdefault(alias, "alias")
    prompts += [Prompt(name, label, source, None) for name, source in names.items()]
    return prompts


def training_prompts(data: AuditData, negatives: tuple[str, ...] = ("retain",)) -> list[Prompt]:
    """Positives from the forget items, negatives from ``negatives``; each text once.

    A text that occurs on both sides keeps its first (flag) label: when in doubt, flag.
    """
    everything = item_prompts(data, "forget", FLAG)
    for split in negatives:
        everything += item_prompts(data, split, ALLOW)
    seen: set[str] = set()
    unique = []
    for prompt in everything:
        if prompt.text not in seen:
            seen.add(prompt.text)
            unique.append(prompt)
    return unique


def as_forget(data: AuditData, split: str) -> AuditData:
    """A copy of ``data`` whose ``split`` items are relabelled ``forget`` (and nothing else
    kept), so that RWKU's rewrites, which are built from forget items, can be made for them."""
    return AuditData(path=data.path, items=[replace(item, split="forget")
                                            for item in data.split(split)])


def rewrite_prompts(data: AuditData, label: int) -> tuple[list[Prompt], dict[str, str]]:
    """RWKU's adversarial rewrites of the forget questions of ``data``, rendered as the
    unlearning probe renders them (without its few-shot examples); and the skipped types."""
    from redteam.core.rewrites import build_attacks, render

    attacks, skipped = build_attacks(data)
    return [Prompt(render(attack, []), label, attack.attack, attack.item.line)
            for attack in attacks], skipped


# ------------------------------------------------------------------------------------- folds


def assign_folds(data: AuditData, splits: tuple[str, ...], folds: int,
                 seed: int) -> dict[int, int]:
    """Audit line -> fold. Each subject's items are shuffled and dealt round-robin, starting
    where the previous subject stopped, so folds are balanced and every subject is in each."""
    rng = random.Random(f"guard-folds-{seed}")
    groups: dict[tuple[str, str], list[int]] = {}
    for item in data.items:
        if item.split in splits:
            groups.setdefault((item.split, item.subject), []).append(item.line)
    fold_of, dealt = {}, 0
    for key in sorted(groups):
        lines = groups[key]
        rng.shuffle(lines)
        for line in lines:
            fold_of[line] = dealt % folds
            dealt += 1
    return fold_of


# ------------------------------------------------------------------------------------- the head


def build_classifier(encoder: Any, seed: int) -> Any:
    """A ``BertForSequenceClassification`` (allow / flag) with the encoder's weights, pooler
    included when the checkpoint has one; the encoder is frozen, the head seeded."""
    from transformers import BertForSequenceClassification

    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.update({"num_labels": len(LABELS), "id2label": dict(enumerate(LABELS)),
                   "label2id": {name: i for i, name in enumerate(LABELS)},
                   "architectures": ["BertForSequenceClassification"]})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    missing, unexpected = model.bert.load_state_dict(encoder.state_dict(), strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise RuntimeError(f"encoder weights do not fit BERT ({(unexpected or missing)[0]})")
    for parameter in model.bert.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def head_parameters(model: Any) -> list[torch.nn.Parameter]:
    """What is trained: the pooler's dense layer and the classifier layer."""
    return [*model.bert.pooler.parameters(), *model.classifier.parameters()]


def head_logits(model: Any, states: torch.Tensor) -> torch.Tensor:
    """The model's own head on cached ``[CLS]`` states: pooler (dense + tanh), dropout,
    classifier, exactly as in ``BertForSequenceClassification.forward``."""
    return model.classifier(model.dropout(model.bert.pooler(states[:, None, :])))


def fit_head(model: Any, start: dict[str, torch.Tensor], states: torch.Tensor,
             labels: torch.Tensor, settings: HeadSettings, seed: int) -> float:
    """Fit the head of ``model`` from ``start`` on ``states``; return the last loss.

    The cross-entropy is class-weighted (weights inversely proportional to the class counts)
    because forget prompts are a small minority; without it the head learns to allow all.
    """
    counts = torch.bincount(labels, minlength=len(LABELS)).float()
    if (counts == 0).any():
        raise ValueError("the training prompts need both forget and retain prompts")
    weights = counts.sum() / (len(LABELS) * counts)
    model.load_state_dict(start, strict=False)
    params = head_parameters(model)
    for parameter in params:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    torch.manual_seed(seed)
    model.dropout.train()
    for _ in range(settings.steps):
        loss = F.cross_entropy(head_logits(model, states), labels, weight=weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for parameter in params:
        parameter.requires_grad_(False)
    return float(loss.detach())


def flag_probability(model: Any, states: torch.Tensor) -> np.ndarray:
    """P(flag) of each cached state under the model's current head."""
    with torch.inference_mode():
        return torch.softmax(head_logits(model, states), dim=-1)[:, FLAG].numpy()


def head_state(model: Any) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()
            if name.startswith(("bert.pooler.", "classifier."))}


# ------------------------------------------------------------------------------------- figures


class StateTable:
    """The ``[CLS]`` state of every distinct prompt text, computed once in batches."""

    def __init__(self, model: Any, tokenizer: Any, prompts: list[Prompt], batch_size: int,
                 quiet: bool) -> None:
        texts = list(dict.fromkeys(p.text for p in prompts))
        self.row = {text: i for i, text in enumerate(texts)}
        self.states = cls_states(model.bert, tokenizer, texts, batch_size, quiet)

    def __call__(self, prompts: list[Prompt]) -> torch.Tensor:
        return self.states[[self.row[p.text] for p in prompts]]


def fit_folds(model: Any, start: dict, train: list[Prompt], states: torch.Tensor,
              fold_of: dict[int, int], folds: int, settings: HeadSettings,
              seed: int) -> list[dict[str, torch.Tensor]]:
    """One head per fold, fitted without the prompts of that fold's items (prompts without an
    item, the subject names and aliases, are always trained on)."""
    fold = np.array([fold_of.get(p.line, -1) if p.line is not None else -1 for p in train])
    labels = torch.tensor([p.label for p in train])
    heads = []
    for k in range(folds):
        keep = torch.from_numpy(fold != k)
        fit_head(model, start, states[keep], labels[keep], settings, seed + k)
        heads.append(head_state(model))
    return heads


def out_of_fold(model: Any, heads: list[dict], fold_of: dict[int, int], prompts: list[Prompt],
                states: torch.Tensor) -> np.ndarray:
    """P(flag) of each prompt from the head whose training left out the prompt's item."""
    fold = np.array([fold_of[p.line] for p in prompts], dtype=int)
    scores = np.zeros(len(prompts))
    for k, head in enumerate(heads):
        chosen = fold == k
        if chosen.any():
            model.load_state_dict(head, strict=False)
            scores[chosen] = flag_probability(model, states[torch.from_numpy(chosen)])
    return scores


def rate(flags: np.ndarray) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def summarise(prompts: list[Prompt], scores: np.ndarray) -> dict[str, Any]:
    """Share of the prompts flagged, overall and per source (question, text, rewrite type)."""
    flagged = scores >= THRESHOLD
    by_source = {}
    for source in dict.fromkeys(p.source for p in prompts):
        chosen = np.array([p.source == source for p in prompts])
        by_source[source] = {"prompts": int(chosen.sum()), "flag_rate": rate(flagged[chosen])}
    return {"prompts": len(prompts), "flag_rate": rate(flagged), "by_source": by_source}


# ------------------------------------------------------------------------------------- the run


def eval_rows(forget_rewrites: list[Prompt], data: AuditData) -> list[dict[str, str]]:
    """Labelled prompts for auditing the guard with TextAttack: forget rewrites to flag, retain
    questions (in the same "Question: ... Answer:" form, so the form is no cue) to allow."""
    rows = [{"text": p.text, "label": "flag"} for p in forget_rewrites]
    rows += [{"text": few_shot_prompt([], item.question), "label": "allow"}
             for item in data.split("retain") if item.question.strip()]
    return list({row["text"]: row for row in rows}.values())


def check_forward(model: Any, tokenizer: Any, texts: list[str]) -> None:
    """The assembled model, run end to end, must reproduce its head on cached states."""
    expected = flag_probability(model, cls_states(model.bert, tokenizer, texts))
    with torch.inference_mode():
        inputs = tokenizer(texts, padding=True, truncation=True,
                           max_length=tokenizer.model_max_length, return_tensors="pt")
        got = torch.softmax(model(**inputs).logits, dim=-1)[:, FLAG].numpy()
    if not np.allclose(got, expected, atol=1e-4) or not np.array_equal(
            got >= THRESHOLD, expected >= THRESHOLD):
        raise RuntimeError("the guard's forward pass does not reproduce the trained head")


def provenance(data_path: Path, data: AuditData, encoder: Path, train: list[Prompt],
               negatives: tuple[str, ...], settings: HeadSettings, seed: int) -> dict[str, Any]:
    """What guard.json records about the inputs and the training (besides the figures)."""
    return {
        "schema": 1,
        "guard": "prompt guard: flags prompts about the forget subjects of the audit data",
        "references": list(REFERENCES),
        "labels": dict(enumerate(LABELS)),
        "threshold": THRESHOLD,
        "seed": seed,
        "encoder": {"name": ENCODER_NAME, "package": PACKAGE, "frozen": True,
                    "features": "last-layer [CLS] state, through BERT's pooler",
                    "pooler_from_checkpoint": has_pooler(encoder),
                    "files_sha256": encoder_hashes(encoder)},
        "data": {"path": str(data_path.resolve()), "sha256": sha256_file(data_path),
                 "items": data.counts()},
        "training": {
            "positives": "forget items' question and text; forget subjects and aliases",
            "negatives": f"{' and '.join(negatives)} items' question and text; their subjects "
                         "and aliases",
            "prompts": {name: sum(p.label == i for p in train) for i, name in enumerate(LABELS)},
            "trained": "BERT pooler (dense + tanh) and classifier layer; encoder frozen",
            "optimizer": "Adam, full batch, class-weighted cross-entropy, dropout 0.1",
            "steps": settings.steps, "lr": settings.lr, "weight_decay": settings.weight_decay,
        },
    }


def train_guard(data_path: str | Path, out: str | Path, *, seed: int = 0, quiet: bool = False,
                folds: int = 5, settings: HeadSettings = HeadSettings(),
                negatives: tuple[str, ...] = ("retain",),
                batch_size: int = 64) -> dict[str, Any]:
    """Train the guard on the audit JSONL ``data_path``, save it to ``out``, return guard.json.

    ``out`` is written atomically (a half-written guard never looks complete); callers check
    that it is new or empty (``redteam.commands.guard``). ``negatives`` names the splits whose
    prompts are allowed: "retain" by default; adding "holdout" did not help on the demo world (and
    leaves no unseen subjects to measure false positives on).
    """
    started = time.perf_counter()
    data_path = Path(data_path)
    data = load_audit_jsonl(data_path)
    # 1. Prompts: the training prompts; RWKU rewrites of forget and of retain questions; the
    #    prompts about subjects never trained on.
    train = training_prompts(data, negatives)
    if not any(p.label == FLAG for p in train) or not any(p.label == ALLOW for p in train):
        raise InputError(f"{data_path}: the guard needs forget and retain items with a "
                         "question, text or subject")
    plain = [p for p in train if p.line is not None]
    forget_rewrites, skipped = rewrite_prompts(data, FLAG)
    retain_rewrites, retain_skipped = rewrite_prompts(as_forget(data, "retain"), ALLOW)
    unseen = [] if "holdout" in negatives else item_prompts(data, "holdout", ALLOW)
    # 2. The guard model on the frozen encoder; every prompt's [CLS] state, computed once.
    source = encoder_dir()
    encoder, tokenizer = load_encoder(source)
    model = build_classifier(encoder, seed)
    del encoder
    states = StateTable(model, tokenizer, train + forget_rewrites + retain_rewrites + unseen,
                        batch_size, quiet)
    start = head_state(model)
    # 3. Cross-validation: each held-out prompt is scored by a head that never saw its item.
    fold_of = assign_folds(data, ("forget", *negatives), folds, seed)
    heads = fit_folds(model, start, train, states(train), fold_of, folds, settings, seed)

    def held_out(prompts: list[Prompt]) -> dict[str, Any]:
        return summarise(prompts, out_of_fold(model, heads, fold_of, prompts, states(prompts)))

    cv_forget = held_out([p for p in plain if p.label == FLAG])
    cv_retain = held_out([p for p in plain if p.label == ALLOW])
    forget_rw, retain_rw = held_out(forget_rewrites), held_out(retain_rewrites)
    # 4. The final head, on every training prompt; the assembled model must agree with it.
    labels = torch.tensor([p.label for p in train])
    final_loss = fit_head(model, start, states(train), labels, settings, seed)
    holdout = summarise(unseen, flag_probability(model, states(unseen)))
    rows = eval_rows(forget_rewrites, data)
    check_forward(model, tokenizer, [r["text"] for r in rows[:: max(1, len(rows) // 32)]][:32])
    # 5. guard.json: provenance and figures; the folder written all or nothing.
    record = provenance(data_path, data, source, train, negatives, settings, seed)
    record["training"].update({"final_loss": round(final_loss, 5),
                               "seconds": round(time.perf_counter() - started, 1)})
    record["evaluation"] = {
        "folds": folds, "protocol": FOLDS_PROTOCOL,
        "cv_detection_rate": cv_forget["flag_rate"],
        "cv_false_positive_rate": cv_retain["flag_rate"],
        "rewrite_detection_rate": forget_rw["flag_rate"],
        "retain_rewrite_false_positive_rate": retain_rw["flag_rate"],
        "holdout_false_positive_rate": holdout["flag_rate"],
        "cv_forget": cv_forget, "cv_retain": cv_retain,
        "forget_rewrites": {**forget_rw, "skipped": skipped},
        "retain_rewrites": {**retain_rw, "skipped": retain_skipped},
        "holdout": holdout,
        "rewrites_note": ("RWKU rewrites (redteam.core.rewrites.build_attacks, rendered without "
                          "few-shot examples), scored out of fold like the plain prompts; "
                          "retain rewrites come from a copy of the data whose retain items are "
                          "relabelled forget"),
        "holdout_note": ("prompts about subjects never trained on (holdout items' questions, "
                         "texts, names and aliases), scored by the final guard; none when "
                         "holdout items are negatives"),
    }
    record["eval_data"] = {
        "file": EVAL_FILE, "flag": sum(r["label"] == "flag" for r in rows),
        "allow": sum(r["label"] == "allow" for r in rows),
        "note": ("forget rewrites (flag) and retain questions (allow), for `redteam audit GUARD "
                 "--suite adversarial --data GUARD/guard-eval.jsonl`"),
    }
    check_trained(model, "guard training")
    with staged_output(out, "prompt guard") as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        atomic_write_text(staging / EVAL_FILE,
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        atomic_write_json(staging / GUARD_FILE, record)
    return record
