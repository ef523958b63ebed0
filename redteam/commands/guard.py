"""``redteam guard``: train a prompt guard on audit data, and check prompts against it.

The guard itself lives in ``defenses.guard`` (ECO prompts, arXiv:2406.07933; O3,
arXiv:2407.10223). This module is the boundary: it validates the paths before anything heavy
runs (the data file is only read, the output must be a new or empty folder that neither holds
nor lies inside it), and it loads a trained guard with the same safety rules as an audit target
(safetensors only, offline, no remote code) before scoring prompts with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redteam.core.data import load_audit_jsonl
from redteam.core.errors import InputError
from redteam.core.outputs import check_output_path
from redteam.core.untrusted import read_json_object
from redteam.targets import load_target


def train_guard_command(data: Path, out: Path, *, seed: int = 0,
                        quiet: bool = False) -> dict[str, Any]:
    """Validate the inputs, train the guard on ``data`` into the new folder ``out``, and return
    its record (what ``guard.json`` holds: provenance and the held-out figures)."""
    from defenses.guard import train_guard
    from defenses.guard.encoder import encoder_dir

    audit_data = load_audit_jsonl(data)  # bad JSONL is reported with file, line and field
    check_output_path(out, {"data": data})
    for split in ("forget", "retain"):
        if not audit_data.split(split):
            raise InputError(f"{data}: no {split} items (the guard learns to flag prompts about "
                             "the forget items and to allow those about the retain items)")
    encoder_dir()  # a missing encoder package is bad input, found before any work
    return train_guard(data, out, seed=seed, quiet=quiet)


def read_guard_record(guard_dir: Path) -> dict[str, Any]:
    """``guard.json`` of a guard folder; anything else is bad input, named as such."""
    from defenses.guard import GUARD_FILE, LABELS, THRESHOLD

    if not guard_dir.is_dir():
        raise InputError(f"{guard_dir}: guard folder not found")
    path = guard_dir / GUARD_FILE
    if not path.is_file():
        raise InputError(f"{guard_dir}: not a guard folder (no {GUARD_FILE}; train one with "
                         "`redteam guard train`)")
    record = read_json_object(path, "guard record")
    labels = record.get("labels")
    if labels != {str(i): name for i, name in enumerate(LABELS)}:
        raise InputError(f"{path}: labels: expected {dict(enumerate(LABELS))}")
    threshold = record.get("threshold", THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
            0 <= threshold <= 1):
        raise InputError(f"{path}: threshold: expected a number in [0, 1], got {threshold!r}")
    return record


def check_prompts(guard_dir: Path, prompts: list[str], *,
                  batch_size: int = 32) -> list[dict[str, Any]]:
    """Score ``prompts`` with the guard: one ``{"prompt", "label", "flag_probability"}`` each.

    The guard is loaded as an audit target of kind ``text-classifier`` (safetensors only), so
    a guard folder handed over by someone else is as safe to check as a model to audit.
    """
    import torch

    from defenses.guard import THRESHOLD

    record = read_guard_record(guard_dir)
    threshold = float(record.get("threshold", THRESHOLD))
    target = load_target(guard_dir, kind="text-classifier")
    model, tokenizer = target.model, target.tokenizer
    if "flag" not in (model.config.label2id or {}):
        raise InputError(f"{guard_dir / 'config.json'}: label2id: no \"flag\" label (a guard's "
                         f"labels are allow and flag)")
    flag = int(model.config.label2id["flag"])
    results = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            inputs = tokenizer(batch, padding=True, truncation=True,
                               max_length=tokenizer.model_max_length, return_tensors="pt")
            probability = torch.softmax(model(**inputs).logits.float(), dim=-1)[:, flag]
            results += [{"prompt": text, "flag_probability": float(p),
                         "label": "flag" if float(p) >= threshold else "allow"}
                        for text, p in zip(batch, probability.tolist())]
    return results
