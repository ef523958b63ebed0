"""The data of a concept-erasure audit: the prompts (``--prompts``) and the images of the concept
(``--concept-images``).

A prompts file is plain text, one prompt per line, or a CSV with a ``prompt`` column and,
optionally, the UnlearnDiffAtk columns ``evaluation_seed`` and ``evaluation_guidance`` (other
columns, such as I2P's categories, are kept out of the way). Every problem is one line naming
``file:line`` and the field.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from redteam.core.errors import InputError
from redteam.core.untrusted import check_text_length, read_text_file
from redteam.core.vision import images_tensor, list_image_files, read_resized

MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class ConceptPrompt:
    line: int
    prompt: str
    seed: int | None = None  # None: the run's seed
    guidance: float | None = None  # None: the probe's guidance setting


@dataclass
class ConceptPrompts:
    path: Path
    items: list[ConceptPrompt]

    def __len__(self) -> int:
        return len(self.items)


def _csv_number(where: str, name: str, text: str | None, kind: type):
    if text is None or not text.strip():
        return None
    try:
        value = kind(text.strip())
    except ValueError:
        raise InputError(f"{where}: {name}: {text.strip()!r} is not "
                         f"{'an integer' if kind is int else 'a number'}") from None
    if kind is float and not (0.0 <= value < 1e4):
        raise InputError(f"{where}: {name}: {value} is not a guidance scale (0 or more)")
    if kind is int and not (0 <= value < 2 ** 63):
        raise InputError(f"{where}: {name}: {value} is not a seed (0 to 2^63 - 1)")
    return value


def _csv_prompts(path: Path, text: str) -> list[ConceptPrompt]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "prompt" not in reader.fieldnames:
        raise InputError(f"{path}:1: no prompt column (columns: "
                         f"{', '.join(reader.fieldnames or []) or 'none'})")
    items = []
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            prompt = (row.get("prompt") or "").strip()
            if not prompt:
                raise InputError(f"{where}: prompt: empty")
            items.append(ConceptPrompt(
                reader.line_num, check_text_length(where, "prompt", prompt, MAX_PROMPT_CHARS),
                _csv_number(where, "evaluation_seed", row.get("evaluation_seed"), int),
                _csv_number(where, "evaluation_guidance", row.get("evaluation_guidance"),
                            float)))
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    return items


def load_prompts(path: str | Path) -> ConceptPrompts:
    """Read a prompts file (``.csv``: CSV with a header; anything else: one prompt per line)."""
    path = Path(path)
    text = read_text_file(path, "prompts file")
    if path.suffix.lower() == ".csv":
        items = _csv_prompts(path, text)
    else:
        items = [ConceptPrompt(number, check_text_length(f"{path}:{number}", "prompt",
                                                         line.strip(), MAX_PROMPT_CHARS))
                 for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not items:
        raise InputError(f"{path}: no prompts (one per line, or a CSV with a prompt column)")
    return ConceptPrompts(path, items)


def load_concept_images(folder: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """Every image under ``folder`` at ``size`` (height, width): ``[N, 3, H, W]`` in [0, 1]."""
    files = list_image_files(folder)
    if not files:
        raise InputError(f"{folder}: no images of the concept")
    return images_tensor([read_resized(file, size) for file in files])
