"""``redteam data import BENCH SOURCE --out audit.jsonl`` and ``redteam data validate FILE``.

The standard unlearning benchmarks, read from a local folder laid out as the benchmark's dataset
repository is when downloaded (nothing is fetched), and written as one audit JSONL whose fields
keep what the benchmark carries:

- TOFU (``locuslab/TOFU``): the forget, retain and holdout QA of one split, with TOFU's
  paraphrased and perturbed answers where its ``*_perturbed`` files give them; real authors and
  world facts as ``utility`` items.
- MUSE (``muse-bench/MUSE-News`` or ``MUSE-Books``): knowmem QA, verbmem passages with MUSE's own
  ``prefix`` / ``continuation``, privleak texts (forget, retain, holdout).
- RWKU (``jinzhuoran/RWKU``): per target, the intro text, level-1 cloze, level-2 QA and level-3
  adversarial queries (``rewrites``, with their attack type); neighbour knowledge as retain.
- WMDP (``cais/wmdp``): one subset's four-option questions (``choices``, ``answer_index``).

Every record is checked where it is read (``file:line: field: problem``, exit 2); SOURCE is only
read; the output is written atomically, and then read back through the audit-data parser, so
what was written is what ``redteam audit`` accepts. Every line names its ``benchmark``, so an
audit of the file scores generated answers as that benchmark does (``core.text_scoring``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redteam.core.data import BENCHMARKS, SPLITS, AuditData, load_audit_jsonl
from redteam.core.errors import InputError
from redteam.core.fileio import atomic_write_text
from redteam.core.outputs import check_new_file
from redteam.core.untrusted import parse_json, read_jsonl_lines, read_text_file

TOFU_FORGET = ("forget01", "forget05", "forget10")
TOFU_RETAIN = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
TOFU_HOLDOUT = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}
TOFU_QA_PER_AUTHOR = 20
MUSE_CORPORA = ("news", "books")
WMDP_SUBSETS = ("bio", "chem", "cyber")
RECORD_SUFFIXES = (".json", ".jsonl", ".parquet")
MAX_PARQUET_BYTES = 1 << 30

Record = tuple[str, dict]  # (where: "file:line" or "file:row N", the record)


def find_split(source: Path, name: str, required: bool = True) -> Path | None:
    """The file of split ``name`` (e.g. ``forget01`` or ``verbmem/forget``) under ``source``:
    ``name.json``, ``name.jsonl`` or ``name.parquet``, a sharded ``name-00000-of-00001.parquet``,
    or the one data file inside a folder ``name/``."""
    base = source / name
    candidates = [base.with_name(base.name + suffix) for suffix in RECORD_SUFFIXES]
    candidates += sorted(base.parent.glob(f"{base.name}-*-of-*.parquet"))
    if base.is_dir():
        candidates += sorted(p for p in base.iterdir() if p.suffix in RECORD_SUFFIXES)
    found = [path for path in candidates if path.is_file()]
    if len(found) > 1:
        raise InputError(f"{source}: several files for {name} ({found[0].name}, "
                         f"{found[1].name}); keep one")
    if not found and required:
        raise InputError(f"{source}: no {name} file (looked for {name}.json, {name}.jsonl, "
                         f"{name}.parquet or a {name}/ folder)")
    return found[0] if found else None


def read_records(path: Path) -> list[Record]:
    """The records of a benchmark file: a JSON array, JSON lines, or a parquet table."""
    if path.suffix == ".parquet":
        return _parquet_records(path)
    text = read_text_file(path, "benchmark file")
    if text.lstrip().startswith("["):
        rows = parse_json(text, str(path))
        if not all(isinstance(row, dict) for row in rows):
            raise InputError(f"{path}: expected a JSON array of objects")
        return [(f"{path}:record {i + 1}", row) for i, row in enumerate(rows)]
    records = []
    for number, line in read_jsonl_lines(path, "benchmark file"):
        row = parse_json(line, f"{path}:{number}")
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: expected a JSON object")
        records.append((f"{path}:{number}", row))
    return records


def _parquet_records(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    if path.stat().st_size > MAX_PARQUET_BYTES:
        raise InputError(f"{path}: larger than {MAX_PARQUET_BYTES:,} bytes")
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001  (pyarrow raises many kinds for a bad file)
        raise InputError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None
    return [(f"{path}:row {i + 1}", row) for i, row in enumerate(rows)]


def text_field(where: str, row: dict, name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: {name}: expected a non-empty string")
    return value


def strings_field(where: str, row: dict, name: str) -> list[str]:
    value = row.get(name)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: {name}: expected a non-empty list of strings")
    return list(value)


# --- TOFU ----------------------------------------------------------------------------------

def import_tofu(source: Path, forget: str = "forget10") -> list[dict]:
    """One TOFU forget split, its complementary retain split and its holdout; every author's
    20 questions share a subject (TOFU has none: "forget author 3", "retain author 17")."""
    if forget not in TOFU_FORGET:
        raise InputError(f"--forget {forget}: one of {', '.join(TOFU_FORGET)}")
    items = []
    for split, name, perturbed in (
            ("forget", forget, f"{forget}_perturbed"),
            ("retain", TOFU_RETAIN[forget], "retain_perturbed"),
            ("holdout", TOFU_HOLDOUT[forget], None)):
        extra = _tofu_perturbed(source, perturbed) if perturbed else {}
        for index, (where, row) in enumerate(read_records(find_split(source, name))):
            question, answer = text_field(where, row, "question"), text_field(where, row, "answer")
            item = {"split": split, "subject": f"{split} author {index // TOFU_QA_PER_AUTHOR + 1}",
                    "question": question, "answer": answer, "text": f"{question} {answer}",
                    **extra.get(question, {})}
            items.append(item)
    for name, subject in (("real_authors", "real authors"), ("world_facts", "world facts")):
        extra = _tofu_perturbed(source, f"{name}_perturbed")
        plain = find_split(source, name, required=False)
        rows = read_records(plain) if plain else []
        for where, row in rows:
            question = text_field(where, row, "question")
            items.append({"split": "utility", "subject": subject, "question": question,
                          "answer": text_field(where, row, "answer"),
                          **extra.get(question, {})})
        if not rows:  # only the perturbed file was downloaded
            for question, fields in extra.items():
                items.append({"split": "utility", "subject": subject, "question": question,
                              **fields})
    return items


def _tofu_perturbed(source: Path, name: str) -> dict[str, dict]:
    """{question: the fields a ``*_perturbed`` file adds}; {} when the file is absent."""
    path = find_split(source, name, required=False)
    if path is None:
        return {}
    fields = {}
    for where, row in read_records(path):
        question = text_field(where, row, "question")
        entry = {"answer": text_field(where, row, "answer"),
                 "perturbed_answers": strings_field(where, row, "perturbed_answer")}
        if "paraphrased_answer" in row:
            entry["paraphrased_answer"] = text_field(where, row, "paraphrased_answer")
        if "paraphrased_question" in row:
            entry["paraphrased_question"] = text_field(where, row, "paraphrased_question")
        fields[question] = entry
    return fields


# --- MUSE ----------------------------------------------------------------------------------

def import_muse(source: Path, corpus: str = "news") -> list[dict]:
    """MUSE's knowmem QA, verbmem passages (with its own prompt / ground-truth split) and
    privleak texts. The raw training corpora are not needed by any probe and are left out."""
    if corpus not in MUSE_CORPORA:
        raise InputError(f"--corpus {corpus}: one of {', '.join(MUSE_CORPORA)}")
    subject = f"MUSE-{corpus.capitalize()}"
    items = []
    for split, name in (("forget", "knowmem/forget_qa"), ("retain", "knowmem/retain_qa")):
        for where, row in read_records(find_split(source, name)):
            items.append({"split": split, "subject": subject,
                          "question": text_field(where, row, "question"),
                          "answer": text_field(where, row, "answer")})
    for where, row in read_records(find_split(source, "verbmem/forget")):
        prompt, truth = text_field(where, row, "prompt"), text_field(where, row, "gt")
        items.append({"split": "forget", "subject": subject, "prefix": prompt,
                      "continuation": truth, "text": prompt + truth})
    for split in ("forget", "retain", "holdout"):
        path = find_split(source, f"privleak/{split}", required=split != "retain")
        for where, row in read_records(path) if path else []:
            items.append({"split": split, "subject": subject,
                          "text": text_field(where, row, "text")})
    return items


# --- RWKU ----------------------------------------------------------------------------------

def import_rwku(source: Path, targets: tuple[str, ...] = ()) -> list[dict]:
    """Per RWKU target (all, or those named): its intro as forget text, level-1 cloze, level-2
    QA and level-3 adversarial queries as forget items; neighbour levels 1-2 as retain items."""
    intros = {}
    for where, row in read_records(find_split(source, "forget_target")):
        intros[text_field(where, row, "target")] = text_field(where, row, "intro")
    unknown = sorted(set(targets) - set(intros))
    if unknown:
        raise InputError(f"--target {unknown[0]}: not a target of {source} (e.g. "
                         f"{', '.join(sorted(intros)[:3])})")
    chosen = set(targets or intros)
    items = [{"split": "forget", "subject": name, "text": intro}
             for name, intro in intros.items() if name in chosen]
    for split, name in (("forget", "forget_level1"), ("forget", "forget_level2"),
                        ("forget", "forget_level3"), ("retain", "neighbor_level1"),
                        ("retain", "neighbor_level2")):
        path = find_split(source, name, required=False)
        for where, row in read_records(path) if path else []:
            subject = text_field(where, row, "subject")
            if subject not in chosen:
                continue
            query, answer = text_field(where, row, "query"), text_field(where, row, "answer")
            item = {"split": split, "subject": subject, "answer": answer}
            if name.endswith("level1"):
                if "___" not in query:
                    raise InputError(f"{where}: query: a level-1 cloze needs ___")
                item["cloze"] = query
            elif name == "forget_level3":
                item["rewrites"] = [{"type": text_field(where, row, "type"), "question": query}]
            else:
                item["question"] = query
            items.append(item)
    return items


# --- WMDP ----------------------------------------------------------------------------------

def import_wmdp(source: Path, subset: str = "bio") -> list[dict]:
    """One WMDP subset's questions as forget items with their four ``choices``."""
    if subset not in WMDP_SUBSETS:
        raise InputError(f"--subset {subset}: one of {', '.join(WMDP_SUBSETS)}")
    items = []
    for where, row in read_records(find_split(source, f"wmdp-{subset}")):
        choices = strings_field(where, row, "choices")
        answer = row.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, int) \
                or not 0 <= answer < len(choices):
            raise InputError(f"{where}: answer: expected the index of one of the "
                             f"{len(choices)} choices, got {answer!r}")
        items.append({"split": "forget", "subject": f"wmdp-{subset}",
                      "question": text_field(where, row, "question"), "choices": choices,
                      "answer_index": answer})
    return items


IMPORTERS: dict[str, Callable[..., list[dict]]] = {
    "tofu": import_tofu, "muse": import_muse, "rwku": import_rwku, "wmdp": import_wmdp}


def import_benchmark(benchmark: str, source: Path, out: Path, **options: Any) -> AuditData:
    """Convert ``source`` (a downloaded benchmark folder) into the audit JSONL ``out``; the
    written file, parsed back as audit data."""
    source, out = Path(source), Path(out)
    if benchmark not in IMPORTERS:
        raise InputError(f"{benchmark}: unknown benchmark (known: {', '.join(BENCHMARKS)})")
    if not source.is_dir():
        raise InputError(f"{source}: benchmark folder not found")
    check_new_file(out, {"benchmark folder": source})
    items = IMPORTERS[benchmark](source, **options)
    if not items:
        raise InputError(f"{source}: no records for the chosen split")
    atomic_write_text(out, "".join(
        json.dumps({"split": item["split"], "benchmark": benchmark, **item},
                   ensure_ascii=False) + "\n" for item in items))
    try:
        return load_audit_jsonl(out)
    except InputError:
        out.unlink()  # a record our parser refuses (e.g. a text over its bound): nothing stays
        raise


def field_counts(data: AuditData) -> dict[str, dict[str, int]]:
    """{split: {field: items of that split carrying it}}, for the splits present."""
    from dataclasses import fields

    names = [f.name for f in fields(data.items[0]) if f.name not in ("split", "line")]
    counts = {}
    for split in SPLITS:
        items = data.split(split)
        if items:
            counts[split] = {"items": len(items),
                             **{name: sum(item.has(name) for item in items) for name in names
                                if any(item.has(name) for item in items)}}
    return counts
