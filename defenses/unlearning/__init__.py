"""Unlearning methods (GA, GradDiff, NPO, SimNPO, SalUn-masked GradDiff and NPO) used by
`redteam unlearn` and the demo zoo. Each is an entry of ``METHODS`` (its loss and defaults);
``unlearn`` runs the shared fine-tuning loop."""

from __future__ import annotations

import json
from pathlib import Path

from defenses.unlearning.methods import (
    HYPER_PARAMETERS,
    METHODS,
    method_settings,
    training_texts,
    unlearn,
)
from redteam.core.prompts import PromptFormat
from redteam.core.training import check_trained

__all__ = ["METHODS", "method_settings", "training_texts", "unlearn", "unlearn_directory"]


def unlearn_directory(model, tokenizer, items: list[dict], method: str, out_dir: Path,
                      prompt_format: PromptFormat | None = None, **hyper) -> Path:
    """Unlearn the ``forget`` items (keeping ``retain`` ones), save as an HF folder in out_dir.

    Questions are trained in ``prompt_format`` (plain by default), the form the model will be
    audited in. The folder gets safetensors weights, the tokenizer and ``unlearning.json``
    (method, prompt format, training settings and the hyper-parameters the method ran with,
    defaults included), so an auditor can see how the model was produced.
    """
    fmt = prompt_format or PromptFormat("plain")
    forget = training_texts([i for i in items if i.get("split") == "forget"], fmt, tokenizer)
    retain = training_texts([i for i in items if i.get("split") == "retain"], fmt, tokenizer)
    model = unlearn(model, tokenizer, forget, retain, method, **hyper)
    check_trained(model, f"unlearning ({method})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    training = {k: v for k, v in hyper.items() if k != "quiet" and k not in HYPER_PARAMETERS}
    record = {"method": method, "prompt_format": fmt.name, "forget_texts": len(forget),
              "retain_texts": len(retain),
              **training, **method_settings(method, **hyper)}
    (out_dir / "unlearning.json").write_text(json.dumps(record, indent=2) + "\n")
    return out_dir
