"""The one output-path policy of every command that writes (docs/threat-model.md, "What the
tool writes, and what it never touches").

What the user gave us is only ever read. So, before any model loads:
- an output may not be, lie inside, or contain any input (model, base, reference, retrain,
  data, test data, surrogate, ...), all paths resolved through symlinks;
- a path that runs through an existing file (``--out notes.txt/run``) is refused, and so is one
  the file system cannot hold (a name over 255 bytes, a path over 4096) or a place we may not
  write (its nearest existing folder is read-only or not ours), so no work is wasted on it;
- an existing, non-empty output folder is refused unless ``--overwrite`` is given *and* the
  folder is one this tool wrote: it carries our marker (``.redteam-output.json``, with the run id
  and the SHA-256 of every file we wrote), and it holds nothing else, unchanged. Then only the
  files named in the marker are removed. A folder that merely contains a file named
  ``findings.json`` or ``protection.json`` is the user's, and stays as it is.

The same ownership rule holds for every single file a command writes, not only for folders: a
file is replaced only when the marker of its folder lists it with its current SHA-256
(``check_replace``: ``redteam report RUN`` re-rendering ``report.html``); a file outside any
output folder of ours (a diff page and the JSON beside it, an imported JSONL) carries no marker,
so it must be new (``check_new_file``), all of its companions included.

Folders are claimed with ``claim_output`` (written in place, as a run folder is, so that
``events.jsonl`` survives a crash) or staged with ``staged_output`` (built beside the target and
renamed into place when complete, as a model or a protected dataset is), and sealed with
``seal_output``, which records what was written. A claim is exclusive: the marker is created
with ``O_EXCL``, so of two runs started on the same new folder the second stops with one line
instead of silently replacing the first; and a claim replaces only the earlier output that
``check_output_path`` allowed (the same run id), never one another run wrote since. While a
folder is staged, SIGTERM is handled as Ctrl-C, so a killed job leaves no staging folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redteam.core.errors import InputError
from redteam.core.fileio import atomic_write_json, hash_tree, path_problem, sha256_file
from redteam.core.untrusted import read_json_object

MARKER = ".redteam-output.json"
TOOL = "redteam"
# The output's own name keeps room for its staging folder's ".NAME.XXXXXXXX.tmp".
STAGING_EXTRA = len("..XXXXXXXX.tmp")

# What ``check_output_path`` allowed, by resolved output path, for the claim that follows it in
# this process: None for a new (absent or empty) folder, else the run id of the earlier output of
# ours that may be replaced. A claim that finds anything else there lost a race with another run.
_UNCHECKED = "unchecked"
_allowed: dict[Path, str | None] = {}


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _through_file(path: Path) -> Path | None:
    """The first existing non-folder on the way to ``path`` (``path`` itself included)."""
    absolute = Path(os.path.abspath(path))
    for part in (*reversed(absolute.parents), absolute):
        if part.exists() and not part.is_dir():
            return part
    return None


def _shown(path: Path, limit: int = 120) -> str:
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def _check_length(out: Path, flag: str, reserve: int = 0) -> None:
    """Refuse a path the file system cannot hold before anything asks it about the path."""
    problem = path_problem(out, reserve)
    if problem is not None:
        raise InputError(f"{_shown(out)}: {flag} {problem}")


def _nearest_existing(path: Path) -> Path:
    absolute = Path(os.path.abspath(path))
    return next(p for p in (absolute, *absolute.parents) if p.exists())


def _check_writable(out: Path, flag: str, place: Path | None = None) -> None:
    """Refuse an output we could not write (its nearest existing folder read-only, or not the
    user's) now, not after minutes of work."""
    folder = _nearest_existing(place if place is not None else out)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{_shown(out)}: {flag} cannot be written: {folder} is read-only or "
                         "not writable by you")


def check_destination(out: Path, flag: str = "--out", reserve: int = 0) -> None:
    """What every output path must pass, folder or file, besides what exists there: a length
    the file system holds, no existing file on the way, a writable place."""
    out = Path(out)
    _check_length(out, flag, reserve)
    blocker = _through_file(Path(os.path.abspath(out)).parent)
    if blocker is not None:
        raise InputError(f"{out}: {flag} runs through the file {blocker}")
    _check_writable(out, flag)


Inputs = Mapping[str, Path | None] | Iterable[tuple[str, Path | None]]


def check_output_path(out: Path, inputs: Inputs, *, overwrite: bool = False,
                      flag: str = "--out", what: str = "output folder") -> None:
    """Refuse ``out`` unless writing there can harm none of ``inputs`` (label -> path, or
    (label, path) pairs when a label repeats).

    Called before anything loads, so bad input leaves nothing behind. What it allowed (a new
    folder, or our earlier output with its run id) is remembered for the claim that follows.
    """
    out = Path(out)
    _check_length(out, flag, STAGING_EXTRA)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: {flag} exists and is not a folder")
    check_destination(out, flag, STAGING_EXTRA)
    real_out = out.resolve()
    for label, path in (inputs.items() if isinstance(inputs, Mapping) else inputs):
        if path is None:
            continue
        real = Path(path).resolve()
        if _within(real_out, real):
            raise InputError(f"{out}: {flag} must not be inside the {label} {path}")
        if _within(real, real_out):
            raise InputError(f"{out}: {flag} must not contain the {label} {path}")
    _allowed[real_out] = _replaceable(out, overwrite, what)


def _replaceable(out: Path, overwrite: bool, what: str) -> str | None:
    """None for a new or empty folder; the run id of our earlier output there when
    ``overwrite`` may replace it; else refuse."""
    if not (out.is_dir() and any(out.iterdir())):
        return None
    record = _recorded(out)
    if "files" in record and record["files"] is None:
        raise InputError(f"{out}: a redteam run is writing it, or was cut off before it "
                         f"finished (its {MARKER} lists no files yet); remove it yourself if "
                         "no run is, or choose a new folder")
    if not overwrite:
        raise InputError(f"{out}: {what} is not empty (pass --overwrite to replace an "
                         "earlier redteam output there)")
    owned_files(out)
    return str(record["run_id"])


def check_new_file(out: Path, inputs: Inputs, flag: str = "--out",
                   companions: Iterable[Path] = ()) -> None:
    """Refuse a single output file (an imported JSONL, a diff page) that exists or lies inside
    one of ``inputs`` (label -> folder): such files carry no ownership marker, so nothing is
    ever overwritten. ``companions`` are the files written with it (the diff's JSON form), under
    the same rule."""
    for file in (Path(out), *map(Path, companions)):
        _check_length(file, flag)
        if file.exists() or file.is_symlink():
            raise InputError(f"{file}: {flag} exists; choose a new file (nothing is overwritten)")
        check_destination(file, flag)
        for label, folder in (inputs.items() if isinstance(inputs, Mapping) else inputs):
            if file.resolve().is_relative_to(Path(folder).resolve()):
                raise InputError(f"{file}: {flag} must not be inside the {label} {folder}")


def check_replace(folder: Path, names: Iterable[str]) -> None:
    """Refuse to write the files ``names`` into ``folder`` (``redteam report RUN`` re-rendering
    its report) where that would replace a file this tool did not write: an existing file is
    replaced only when the folder's marker lists it, unchanged."""
    folder = Path(folder)
    _check_writable(folder, "folder")
    existing = [name for name in names if (folder / name).exists() or
                (folder / name).is_symlink()]
    if not existing:
        return
    files = _recorded(folder).get("files")
    for name in existing:
        path = folder / name
        refuse = f"{path}: not replaced, because redteam did not write it"
        if path.is_symlink() or not path.is_file():
            raise InputError(f"{path}: not replaced: it is not a plain file")
        if not isinstance(files, dict):
            raise InputError(f"{refuse} ({folder} has no {MARKER} listing its files). Move it "
                             "away or copy findings.json to a new folder")
        if name not in files:
            raise InputError(f"{refuse} (not one of the files in its {MARKER}). Move it away")
        if files[name] != sha256_file(path):
            raise InputError(f"{path}: not replaced, because it changed since redteam wrote "
                             "it. Move it away")


def _recorded(out: Path) -> dict[str, Any]:
    """The marker of ``out`` ({} when there is none or it is not ours)."""
    marker = Path(out) / MARKER
    if not marker.is_file():
        return {}
    try:
        record = read_json_object(marker, "redteam output marker")
    except InputError:
        return {}
    return record if record.get("tool") == TOOL else {}


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
                         "recorded its files (or is still writing it). Remove it yourself or "
                         "choose a new folder")
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


def _busy(out: Path) -> InputError:
    return InputError(f"{out}: already being written by another run (it changed after this "
                      "run checked it); choose a new folder")


def _allowed_for(out: Path) -> str | None:
    """What the check of ``out`` allowed (and forget it: one claim per check)."""
    return _allowed.pop(Path(out).resolve(), _UNCHECKED)


def _take_over(out: Path, allowed: str | None) -> None:
    """Empty ``out`` of the earlier output that its check allowed to replace, when it is still
    that output (same run id); refuse when another run took the folder meanwhile."""
    if allowed is None:
        return
    if allowed != _UNCHECKED and _recorded(out).get("run_id") != allowed:
        raise _busy(out)
    if allowed == _UNCHECKED and out.is_dir() and _recorded(out).get("files", {}) is None:
        raise _busy(out)
    clear_output(out)


def _claim_new(out: Path, kind: str, run_id: str) -> bool:
    """Create our marker in the empty (or absent) folder ``out`` with ``O_EXCL``: of two runs
    claiming one folder, exactly one succeeds. Returns whether ``out`` was created here."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        out.mkdir()
        created = True
    except FileExistsError:
        created = False
        if not out.is_dir():
            raise InputError(f"{out}: exists and is not a folder") from None
    try:
        handle = os.open(out / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise _busy(out) from None
    with os.fdopen(handle, "w", encoding="utf-8") as marker:
        json.dump(_marker(kind, run_id, None), marker, indent=2)
        marker.flush()
        os.fsync(marker.fileno())
    stranger = next((p.name for p in out.iterdir() if p.name != MARKER), None)
    if stranger is not None:
        _release(out, run_id, created)
        raise InputError(f"{out}: {stranger} appeared in it after this run checked it; choose a "
                         "new folder")
    return created


def _release(out: Path, run_id: str, created: bool) -> None:
    """Undo ``_claim_new`` (a run that failed before it wrote anything in place)."""
    if _recorded(out).get("run_id") == run_id:
        (out / MARKER).unlink(missing_ok=True)
    if created:
        try:
            out.rmdir()
        except OSError:
            pass  # not empty: another run's now


def claim_output(out: Path, kind: str) -> str:
    """Mark ``out`` ours, exclusively: create it (or empty the earlier output of ours that
    ``check_output_path`` allowed to replace) and create the marker with ``O_EXCL``.

    Returns the run id. The marker lists no files until ``seal_output``.
    """
    out = Path(out)
    _take_over(out, _allowed_for(out))
    run_id = uuid.uuid4().hex
    _claim_new(out, kind, run_id)
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
    marker = Path(out) / MARKER
    if not marker.is_file():
        return
    record = read_json_object(marker, "redteam output marker")
    if isinstance(record.get("files"), dict):
        record["files"].update({name: sha256_file(Path(out) / name) for name in names})
        atomic_write_json(marker, record)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (a job scheduler, ``kill``, a CI timeout) raises
    KeyboardInterrupt as Ctrl-C does, so the ``finally`` clauses that remove half-written output
    run; by default SIGTERM ends the process without them. A second SIGTERM is ignored until
    the block is left, so the clean-up is not cut short. Only in the main thread, and only
    where nobody else handles SIGTERM already."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def interrupt(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _put_in_place(staging: Path, out: Path, run_id: str, allowed: str | None) -> None:
    """Rename the sealed ``staging`` to ``out``: over our own placeholder (a new folder), or
    over the earlier output its check allowed to replace, removed only now."""
    if allowed is None:
        if _recorded(out).get("run_id") != run_id:
            raise _busy(out)
        (out / MARKER).unlink()
    else:
        _take_over(out, allowed)
    try:
        os.rename(staging, out)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise _busy(out) from None
        raise


@contextmanager
def staged_output(out: Path, kind: str) -> Iterator[Path]:
    """Yield a staging folder beside ``out``; when the block succeeds, seal it and put it in
    place of ``out`` (whose earlier output of ours, if any, is removed only then).

    A new ``out`` is claimed first (created with our marker, exclusively), so a second run on it
    stops before its work; on failure, Ctrl-C or SIGTERM the staging folder and that claim are
    removed."""
    out = Path(out)
    allowed = _allowed_for(out)
    if allowed == _UNCHECKED:
        if _recorded(out).get("files", {}) is None:
            raise _busy(out)
        if not (out.is_dir() and any(out.iterdir())):
            allowed = None
    with terminate_as_interrupt():
        _check_writable(out, "output", out.parent)
        run_id = uuid.uuid4().hex
        created = _claim_new(out, kind, run_id) if allowed is None else False
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp",
                                            dir=out.parent))
            try:
                yield staging
                seal_output(staging, kind, run_id)
                _put_in_place(staging, out, run_id, allowed)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            if allowed is None:
                _release(out, run_id, created)
            raise
