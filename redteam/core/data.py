"""Audit data: the JSONL of forget / retain / holdout / utility items (docs/data-formats.md).

Every line is validated at the boundary; a bad line is reported as ``file:line: field: problem``
so the user can fix it without reading a traceback. Besides the core fields (subject, question,
answer, text), an item may carry what the standard benchmarks supply (``redteam data import``):
MUSE's own verbatim split point (``prefix`` / ``continuation``), TOFU's paraphrased and
perturbed answers, RWKU's cloze sentence and ready-made adversarial ``rewrites``, WMDP's
``choices`` with ``answer_index``. An imported file also names its ``benchmark`` on every line,
which picks the benchmark's own scorer of generated answers (``redteam.core.text_scoring``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from redteam.core.errors import InputError
from redteam.core.untrusted import check_text_length, json_object, read_jsonl_lines

SPLITS = ("forget", "retain", "holdout", "utility")
BENCHMARKS = ("tofu", "muse", "rwku", "wmdp")  # what ``redteam data import`` reads
STRING_FIELDS = ("subject", "question", "answer", "text", "prefix", "continuation",
                 "paraphrased_question", "paraphrased_answer", "cloze")
LIST_FIELDS = ("aliases", "choices", "perturbed_answers")
KNOWN_FIELDS = ("split", "benchmark", *STRING_FIELDS, *LIST_FIELDS, "rewrites", "answer_index")
CLOZE_BLANK = "___"
# Bounds checked before anything is tokenised: a question of 50 MB would otherwise be tokenised
# whole (minutes) only to be truncated to the scorer's context length.
MAX_FIELD_CHARS = {"subject": 1_000, "question": 20_000, "answer": 20_000, "text": 200_000,
                   "prefix": 200_000, "continuation": 200_000, "paraphrased_question": 20_000,
                   "paraphrased_answer": 20_000, "cloze": 20_000}
MAX_LIST_ITEMS, MAX_ITEM_CHARS = 100, 20_000


@dataclass(frozen=True)
class Rewrite:
    """A ready-made adversarial form of an item's question (RWKU level 3, or any supplied
    attack): its attack ``type`` and the rewritten ``question``."""

    type: str
    question: str


@dataclass(frozen=True)
class AuditItem:
    split: str
    subject: str = ""
    question: str = ""
    answer: str = ""
    text: str = ""
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    prefix: str = ""  # MUSE verbmem: the passage's opening, given to the model
    continuation: str = ""  # and the true continuation it is compared with
    paraphrased_question: str = ""  # TOFU
    paraphrased_answer: str = ""
    perturbed_answers: tuple[str, ...] = ()  # TOFU: plausible but wrong answers
    cloze: str = ""  # RWKU level 1: a sentence with ___ where the answer goes
    rewrites: tuple[Rewrite, ...] = ()
    answer_index: int | None = None  # WMDP: which of ``choices`` is right
    benchmark: str = ""  # the benchmark an imported item came from ("" in a plain file)
    line: int = 0

    def has(self, *fields: str) -> bool:
        """True when every named field is present and non-empty."""
        return all(getattr(self, name) not in (None, "", ()) for name in fields)


@dataclass
class AuditData:
    path: Path
    items: list[AuditItem] = field(default_factory=list)

    def split(self, name: str) -> list[AuditItem]:
        return [item for item in self.items if item.split == name]

    @property
    def benchmark(self) -> str:
        """The benchmark the items were imported from ("" for a plain file); one per file,
        checked when it is read."""
        return next((item.benchmark for item in self.items if item.benchmark), "")

    def with_fields(self, split: str, *fields: str) -> list[AuditItem]:
        """Items of ``split`` that carry every field in ``fields``."""
        return [item for item in self.split(split) if item.has(*fields)]

    def counts(self) -> dict[str, int]:
        """Items per split: forget, retain and holdout always, ``utility`` when present."""
        counts = {name: len(self.split(name)) for name in SPLITS}
        return {name: n for name, n in counts.items() if n or name != "utility"}

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
    if "benchmark" in obj:
        if obj["benchmark"] not in BENCHMARKS:
            raise InputError(f"{where}: benchmark: must be one of {', '.join(BENCHMARKS)}, "
                             f"got {obj['benchmark']!r}")
        values["benchmark"] = obj["benchmark"]
    for name in STRING_FIELDS:
        if name in obj:
            if not isinstance(obj[name], str):
                raise InputError(f"{where}: {name}: expected a string")
            values[name] = check_text_length(where, name, obj[name], MAX_FIELD_CHARS[name])
    for name in LIST_FIELDS:
        if name in obj:
            values[name] = _strings(where, name, obj[name])
    if "rewrites" in obj:
        values["rewrites"] = _rewrites(where, obj["rewrites"])
    if values.get("cloze") and CLOZE_BLANK not in values["cloze"]:
        raise InputError(f"{where}: cloze: needs {CLOZE_BLANK} where the answer goes")
    if "answer_index" in obj:
        values["answer_index"] = _answer_index(where, obj, values)
    elif values.get("answer") in values.get("choices", ()):  # the answer is one of the options
        values["answer_index"] = values["choices"].index(values["answer"])
    return AuditItem(**values)


def _strings(where: str, name: str, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: {name}: expected a list of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise InputError(f"{where}: {name}: {len(value)} entries; at most {MAX_LIST_ITEMS} are "
                         "accepted")
    return tuple(check_text_length(where, name, v, MAX_ITEM_CHARS) for v in value)


def _rewrites(where: str, value) -> tuple[Rewrite, ...]:
    if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
        raise InputError(f"{where}: rewrites: expected a list of at most {MAX_LIST_ITEMS} "
                         '{"type": str, "question": str} objects')
    rewrites = []
    for index, entry in enumerate(value):
        if (not isinstance(entry, dict) or set(entry) != {"type", "question"}
                or not all(isinstance(entry[k], str) and entry[k] for k in entry)):
            raise InputError(f"{where}: rewrites[{index}]: expected {{\"type\": str, "
                             f"\"question\": str}}, both non-empty")
        rewrites.append(Rewrite(check_text_length(where, "rewrites.type", entry["type"], 100),
                                check_text_length(where, "rewrites.question", entry["question"],
                                                  MAX_ITEM_CHARS)))
    return tuple(rewrites)


def _answer_index(where: str, obj: dict, values: dict) -> int:
    index, choices = obj["answer_index"], values.get("choices", ())
    if isinstance(index, bool) or not isinstance(index, int):
        raise InputError(f"{where}: answer_index: expected an integer")
    if not 0 <= index < len(choices):
        raise InputError(f"{where}: answer_index: {index} does not name one of the "
                         f"{len(choices)} choices")
    if values.get("answer") and values["answer"] != choices[index]:
        raise InputError(f"{where}: answer: {values['answer']!r} is not choices[{index}]")
    values.setdefault("answer", choices[index])
    return index


def load_audit_jsonl(path: str | Path) -> AuditData:
    """Read and validate an audit JSONL file; blank lines are skipped, all else is checked."""
    path = Path(path)
    items = [_parse_line(path, number, line)
             for number, line in read_jsonl_lines(path, "audit data file")]
    if not items:
        raise InputError(f"{path}: no audit items (the file is empty)")
    named = [item for item in items if item.benchmark]
    for item in named:
        if item.benchmark != named[0].benchmark:  # one scorer per file: never a mixture
            raise InputError(f"{path}:{item.line}: benchmark: {item.benchmark!r}, but line "
                             f"{named[0].line} says {named[0].benchmark!r} (one benchmark a "
                             "file)")
    return AuditData(path=path, items=items)
