"""Audit data: the JSONL of forget / retain / holdout items (DESIGN.md, "Audit data").

Every line is validated at the boundary; a bad line is reported as ``file:line: field: problem``
so the user can fix it without reading a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from redteam.errors import InputError

SPLITS = ("forget", "retain", "holdout")
STRING_FIELDS = ("subject", "question", "answer", "text")
LIST_FIELDS = ("aliases", "choices")
KNOWN_FIELDS = ("split", *STRING_FIELDS, *LIST_FIELDS)


@dataclass(frozen=True)
class AuditItem:
    split: str
    subject: str = ""
    question: str = ""
    answer: str = ""
    text: str = ""
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    line: int = 0

    def has(self, *fields: str) -> bool:
        """True when every named field is present and non-empty."""
        return all(getattr(self, name) for name in fields)


@dataclass
class AuditData:
    path: Path
    items: list[AuditItem] = field(default_factory=list)

    def split(self, name: str) -> list[AuditItem]:
        return [item for item in self.items if item.split == name]

    def with_fields(self, split: str, *fields: str) -> list[AuditItem]:
        """Items of ``split`` that carry every field in ``fields``."""
        return [item for item in self.split(split) if item.has(*fields)]

    def counts(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLITS}


def json_object(where: str, line: str, known: tuple[str, ...]) -> dict:
    """One JSONL line as an object with only ``known`` fields; ``where`` is ``file:line``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise InputError(f"{where}: {unknown[0]}: unknown field (known: {', '.join(known)})")
    return obj


def _parse_line(path: Path, number: int, line: str) -> AuditItem:
    where = f"{path}:{number}"
    obj = json_object(where, line, KNOWN_FIELDS)
    split = obj.get("split")
    if split not in SPLITS:
        raise InputError(f"{where}: split: must be one of {', '.join(SPLITS)}, got {split!r}")
    values: dict = {"split": split, "line": number}
    for name in STRING_FIELDS:
        if name in obj:
            if not isinstance(obj[name], str):
                raise InputError(f"{where}: {name}: expected a string")
            values[name] = obj[name]
    for name in LIST_FIELDS:
        if name in obj:
            value = obj[name]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InputError(f"{where}: {name}: expected a list of strings")
            values[name] = tuple(value)
    return AuditItem(**values)


def load_audit_jsonl(path: str | Path) -> AuditData:
    """Read and validate an audit JSONL file; blank lines are skipped, all else is checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: audit data file not found")
    items = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    items.append(_parse_line(path, number, line))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    if not items:
        raise InputError(f"{path}: no audit items (the file is empty)")
    return AuditData(path=path, items=items)
