"""The one output-path policy of every command that writes (README, "What the tool writes, and
what it never touches").

What the user gave us is only ever read. So, before any model loads:
- an output may not be, lie inside, or contain any input (model, base, reference, retrain,
  data, test data, surrogate, ...), all paths resolved through symlinks;
- a path that runs through an existing file (``--out notes.txt/run``) is refused;
- an existing, non-empty output folder is refused unless ``--overwrite`` is given *and* the
  folder is one this tool wrote: it carries our marker (``.redteam-output.json``, with the run id
  and the SHA-256 of every file we wrote), and it holds nothing else, unchanged. Then only the
  files named in the marker are removed. A folder that merely contains a file named
  ``findings.json`` or ``protection.json`` is the user's, and stays as it is.

Folders are claimed with ``claim_output`` (written in place, as a run folder is, so that
``events.jsonl`` survives a crash) or staged with ``staged_output`` (built beside the target and
renamed into place when complete, as a model or a protected dataset is), and sealed with
``seal_output``, which records what was written.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from redteam.core.errors import InputError
from redteam.core.fileio import atomic_dir, atomic_write_json, hash_tree
from redteam.core.untrusted import read_json_object

MARKER = ".redteam-output.json"
TOOL = "redteam"


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _through_file(path: Path) -> Path | None:
    """The first existing non-folder on the way to ``path`` (``path`` itself included)."""
    absolute = Path(os.path.abspath(path))
    for part in (*reversed(absolute.parents), absolute):
        if part.exists() and not part.is_dir():
            return part
    return None


Inputs = Mapping[str, Path | None] | Iterable[tuple[str, Path | None]]


def check_output_path(out: Path, inputs: Inputs, *, overwrite: bool = False,
                      flag: str = "--out", what: str = "output folder") -> None:
    """Refuse ``out`` unless writing there can harm none of ``inputs`` (label -> path, or
    (label, path) pairs when a label repeats).

    Called before anything loads, so bad input leaves nothing behind.
    """
    out = Path(out)
    blocker = _through_file(out)
    if blocker is not None:
        place = "exists and is not a folder" if blocker == Path(os.path.abspath(out)) else (
            f"runs through the file {blocker}")
        raise InputError(f"{out}: {flag} {place}")
    real_out = out.resolve()
    for label, path in (inputs.items() if isinstance(inputs, Mapping) else inputs):
        if path is None:
            continue
        real = Path(path).resolve()
        if _within(real_out, real):
            raise InputError(f"{out}: {flag} must not be inside the {label} {path}")
        if _within(real, real_out):
            raise InputError(f"{out}: {flag} must not contain the {label} {path}")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: {what} is not empty (pass --overwrite to replace an "
                             "earlier redteam output there)")
        owned_files(out)


def check_new_file(out: Path, inputs: Inputs, flag: str = "--out") -> None:
    """Refuse a single output file (an imported JSONL, a diff page) that exists or lies inside
    one of ``inputs`` (label -> folder): such files carry no ownership marker, so nothing is
    ever overwritten."""
    out = Path(out)
    if out.exists():
        raise InputError(f"{out}: {flag} exists; choose a new file (nothing is overwritten)")
    for label, folder in (inputs.items() if isinstance(inputs, Mapping) else inputs):
        if out.resolve().is_relative_to(Path(folder).resolve()):
            raise InputError(f"{out}: {flag} must not be inside the {label} {folder}")


def owned_files(out: Path) -> list[Path]:
    """The files of ``out`` that this tool wrote, when it wrote all of them; else refuse."""
    marker = out / MARKER
    refuse = f"{out}: not replaced, because redteam did not write it"
    if not marker.is_file():
        raise InputError(f"{refuse} (no {MARKER}); --overwrite only replaces earlier redteam "
                         "output. Choose a new folder")
    record = read_json_object(marker, "redteam output marker")
    files = record.get("files")
    if record.get("tool") != TOOL or not isinstance(record.get("run_id"), str):
        raise InputError(f"{marker}: not a redteam output marker")
    if files is None:
        raise InputError(f"{refuse} completely: the run that wrote it was cut off before it "
                         "recorded its files. Remove it yourself or choose a new folder")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise InputError(f"{marker}: files: expected an object of SHA-256 digests")
    present = hash_tree(out)
    present.pop(MARKER, None)
    for name, digest in sorted(present.items()):
        if name not in files:
            raise InputError(f"{refuse}: {name} is not one of its files. Move it away or "
                             "choose a new folder")
        if files[name] != digest:
            raise InputError(f"{refuse}: {name} changed since redteam wrote it. Move it away "
                             "or choose a new folder")
    return [out / name for name in present]


def clear_output(out: Path) -> None:
    """Remove an earlier output of ours (checked again here), and nothing else."""
    if not out.is_dir():
        return
    for file in owned_files(out):
        file.unlink()
    (out / MARKER).unlink(missing_ok=True)
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _marker(kind: str, run_id: str, files: dict[str, str] | None) -> dict:
    return {"tool": TOOL, "schema": 1, "kind": kind, "run_id": run_id,
            "written": datetime.now(UTC).isoformat(timespec="seconds"), "files": files}


def claim_output(out: Path, kind: str) -> str:
    """Create (or, after ``check_output_path`` allowed it, empty) ``out`` and mark it ours.

    Returns the run id. The marker lists no files until ``seal_output``.
    """
    out = Path(out)
    clear_output(out)
    out.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex
    atomic_write_json(out / MARKER, _marker(kind, run_id, None))
    return run_id


def seal_output(out: Path, kind: str | None = None, run_id: str | None = None) -> None:
    """Record every file now in ``out`` (with its SHA-256) in the marker."""
    out = Path(out)
    previous: dict = {}
    if (out / MARKER).is_file():
        previous = read_json_object(out / MARKER, "redteam output marker")
    files = hash_tree(out)
    files.pop(MARKER, None)
    atomic_write_json(out / MARKER, _marker(
        kind or str(previous.get("kind", "output")),
        run_id or str(previous.get("run_id") or uuid.uuid4().hex), files))


def record_rewritten(out: Path, *names: str) -> None:
    """After rewriting the files ``names`` of a sealed output, record their new digests (and
    nothing else: a file the user put there meanwhile stays unclaimed)."""
    from redteam.core.fileio import sha256_file

    marker = Path(out) / MARKER
    if not marker.is_file():
        return
    record = read_json_object(marker, "redteam output marker")
    if isinstance(record.get("files"), dict):
        record["files"].update({name: sha256_file(Path(out) / name) for name in names})
        atomic_write_json(marker, record)


@contextmanager
def staged_output(out: Path, kind: str) -> Iterator[Path]:
    """Yield a staging folder beside ``out``; when the block succeeds, seal it and put it in
    place of ``out`` (whose earlier output of ours, if any, is removed only then)."""
    out = Path(out)
    with atomic_dir(out) as staging:
        yield staging
        seal_output(staging, kind)
        clear_output(out)
