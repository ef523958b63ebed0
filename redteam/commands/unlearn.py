"""``redteam unlearn``: load a user's model safely, unlearn its forget items, save a new folder.

The unlearning methods themselves live in ``defenses.unlearning``; this module is the boundary:
it validates the paths, loads with the same safety rules as an audit, and writes the result
atomically into a new folder so the user's model is never touched.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from redteam.core.answers import PROMPT_SETTINGS, calibrate_prompt_format
from redteam.core.data import load_audit_jsonl
from redteam.core.errors import InputError
from redteam.core.outputs import check_output_path, staged_output
from redteam.core.prompts import PromptFormat
from redteam.core.scoring import CausalLMScorer
from redteam.core.settings import default_values
from redteam.targets import load_target, resolve_device


def unlearn_model(model: Path, method: str, data: Path, out: Path, *, epochs: int = 5,
                  lr: float = 1e-4, batch_size: int = 8, beta: float | None = None,
                  delta: float | None = None, saliency: float | None = None,
                  prompt_format: PromptFormat | None = None, seed: int = 0,
                  device: str = "auto", allow_pickle: bool = False, quiet: bool = False) -> Path:
    """Unlearn the ``forget`` items of ``data`` from ``model`` into the new folder ``out``.

    ``beta`` (NPO, SimNPO), ``delta`` (SimNPO) and ``saliency`` (SalUn's kept fraction) left at
    None take the method's default; the ones a method does not read are ignored. Questions are
    trained in ``prompt_format`` (default ``auto``: calibrated on the model's answers to the
    retain questions, as an audit does), the form the model will be audited in.
    """
    from defenses.unlearning import METHODS, unlearn_directory

    if method not in METHODS:
        raise InputError(f"--method {method}: unknown method (known: {', '.join(METHODS)})")
    check_output_path(out, {"model folder": model, "data": data}, overwrite=False)
    audit_data = load_audit_jsonl(data)
    if not audit_data.split("forget"):
        raise InputError(f"{data}: no forget items to unlearn")
    if METHODS[method].needs_retain and not audit_data.split("retain"):
        raise InputError(f"{data}: --method {method} needs retain items (without them it is "
                         "plain gradient ascent)")
    target = load_target(model, kind="causal-lm", device=resolve_device(device),
                         allow_pickle=allow_pickle)
    fmt = calibrate_prompt_format(
        prompt_format or PromptFormat("auto"), audit_data, target, "target",
        CausalLMScorer(target.model, target.tokenizer, quiet=quiet), seed,
        default_values(PROMPT_SETTINGS)).chosen
    fmt = replace(fmt, shots=0)  # each training text is one question and its answer
    target.model.train()
    items = [asdict(item) for item in audit_data.items]
    with staged_output(out, "unlearned model") as staging:
        unlearn_directory(target.model, target.tokenizer, items, method, staging,
                          prompt_format=fmt, epochs=epochs, lr=lr, batch_size=batch_size,
                          beta=beta, delta=delta, saliency=saliency, seed=seed, quiet=quiet)
    return out
