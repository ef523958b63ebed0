"""Audit data: the JSONL of forget / retain / holdout items (README, "Data format").

Every line is validated at the boundary; a bad line is reported as ``file:line: field: problem``
so the user can fix it without reading a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from redteam.core.errors import InputError
from redteam.core.untrusted import check_text_length, json_object, read_jsonl_lines

SPLITS = ("forget", "retain", "holdout")
STRING_FIELDS = ("subject", "question", "answer", "text")
LIST_FIELDS = ("aliases", "choices")
KNOWN_FIELDS = ("split", *STRING_FIELDS, *LIST_FIELDS)
# Bounds checked before anything is tokenised: a question of 50 MB would otherwise be tokenised
# whole (minutes) only to be truncated to the scorer's context length.
MAX_FIELD_CHARS = {"subject": 1_000, "question": 20_000, "answer": 20_000, "text": 200_000}
MAX_LIST_ITEMS, MAX_ITEM_CHARS = 100, 20_000


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

    def sample(self, max_items: int, seed: int = 0) -> AuditData:
        """At most ``max_items`` items of each split, seeded and stratified by subject: the
        subjects take turns (in a seeded order, each subject's items shuffled), so a quick
        audit of a large benchmark still covers as many subjects as it can. File order is kept.
        """
        import random

        rng = random.Random(seed)
        chosen: list[AuditItem] = []
        for name in SPLITS:
            by_subject: dict[str, list[AuditItem]] = {}
            for item in self.split(name):
                by_subject.setdefault(item.subject, []).append(item)
            queues = [rng.sample(items, len(items)) for items in by_subject.values()]
            rng.shuffle(queues)
            picked: list[AuditItem] = []
            while queues and len(picked) < max_items:
                queues = [queue for queue in queues if queue]
                for queue in queues[: max_items - len(picked)]:
                    picked.append(queue.pop())
            chosen += picked
        return AuditData(path=self.path, items=sorted(chosen, key=lambda item: item.line))


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
            values[name] = check_text_length(where, name, obj[name], MAX_FIELD_CHARS[name])
    for name in LIST_FIELDS:
        if name in obj:
            value = obj[name]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InputError(f"{where}: {name}: expected a list of strings")
            if len(value) > MAX_LIST_ITEMS:
                raise InputError(f"{where}: {name}: {len(value)} entries; at most "
                                 f"{MAX_LIST_ITEMS} are accepted")
            values[name] = tuple(check_text_length(where, name, v, MAX_ITEM_CHARS)
                                 for v in value)
    return AuditItem(**values)


def load_audit_jsonl(path: str | Path) -> AuditData:
    """Read and validate an audit JSONL file; blank lines are skipped, all else is checked."""
    path = Path(path)
    items = [_parse_line(path, number, line)
             for number, line in read_jsonl_lines(path, "audit data file")]
    if not items:
        raise InputError(f"{path}: no audit items (the file is empty)")
    return AuditData(path=path, items=items)
