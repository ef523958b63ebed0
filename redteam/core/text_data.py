"""Audit data of a text classifier: labelled texts, one JSON object per line.

``{"text": "a superb film", "label": "positive"}`` — ``label`` is one of the model's label names
(its ``config.label2id``) or a label id. The file is read strictly, like the LLM audit JSONL
(``redteam.core.data``): a bad line is reported as ``file:line: field: problem`` so the user can fix
it without reading a traceback, and nothing runs on half-valid data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from redteam.core.errors import InputError
from redteam.core.untrusted import check_text_length, json_object, read_jsonl_lines

FIELDS = ("text", "label")
MAX_TEXT_CHARS = 100_000  # checked before tokenisation


@dataclass(frozen=True)
class LabelledText:
    """One line of the file: the text, its true label id, and the line number for messages."""

    text: str
    label: int  # the model's label id
    line: int = 0


@dataclass
class LabelledTexts:
    """The texts of a ``--data`` file with their true label ids, in file order."""

    path: Path
    items: list[LabelledText] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def texts(self) -> list[str]:
        return [item.text for item in self.items]

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]


def _label_id(value: object, label2id: Mapping[str, int], where: str) -> int:
    ids = set(label2id.values())
    if isinstance(value, str) and value in label2id:
        return label2id[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in ids:
        return value
    known = ", ".join(f"{name!r} ({i})" for name, i in sorted(label2id.items(), key=lambda x: x[1]))
    if isinstance(value, str | int) and not isinstance(value, bool):
        raise InputError(f"{where}: label: {value!r} is not a label of the model (known: {known})")
    raise InputError(f"{where}: label: expected a label name or id, got {type(value).__name__}")


def _parse_line(path: Path, number: int, line: str,
                label2id: Mapping[str, int]) -> LabelledText:
    where = f"{path}:{number}"
    obj = json_object(where, line, FIELDS)
    for name in FIELDS:
        if name not in obj:
            raise InputError(f"{where}: {name}: missing")
    text = obj["text"]
    if not isinstance(text, str):
        raise InputError(f"{where}: text: expected a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{where}: text: empty")
    check_text_length(where, "text", text, MAX_TEXT_CHARS)
    return LabelledText(text=text, label=_label_id(obj["label"], label2id, where), line=number)


def load_labelled_texts(path: str | Path, label2id: Mapping[str, int]) -> LabelledTexts:
    """Read and validate a labelled-texts JSONL file against the model's ``label2id``.

    Blank lines are skipped; everything else is checked, and the first bad line raises
    ``InputError`` naming the file, line and field.
    """
    path = Path(path)
    names = {str(name): int(i) for name, i in label2id.items()}
    items = [_parse_line(path, number, line, names)
             for number, line in read_jsonl_lines(path, "labelled texts file (JSONL)")]
    if not items:
        raise InputError(f"{path}: no labelled texts (the file is empty)")
    return LabelledTexts(path=path, items=items)
