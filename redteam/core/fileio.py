"""Atomic writes and hashing: an interrupted run never leaves a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_TEMP_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


# What Linux file systems hold: a name of at most 255 bytes, a path of at most 4096 (with its
# final NUL).
NAME_MAX, PATH_MAX = 255, 4096


def path_problem(path: str | os.PathLike, reserve: int = 0) -> str | None:
    """Why the file system cannot hold ``path`` (a NUL byte, a path or a name too long: asking
    about such a path is an error, not False), or None. ``reserve`` bytes of the last name are
    kept for a name derived from it (a staging folder's)."""
    text = os.fspath(path)
    if "\0" in text:
        return "holds a NUL byte"
    absolute = os.fsencode(os.path.abspath(text))
    if len(absolute) >= PATH_MAX:
        return (f"path is {len(absolute):,} bytes long; the file system holds at most "
                f"{PATH_MAX - 1:,}")
    names = absolute.split(b"/")
    for index, name in enumerate(names):
        limit = NAME_MAX - (reserve if index == len(names) - 1 else 0)
        if len(name) > limit:
            return (f"has a name of {len(name):,} bytes ({os.fsdecode(name)[:40]}…); at most "
                    f"{limit} fit")
    return None


def _new_temp_file(path: Path) -> tuple[int, str]:
    """A new, empty temporary file beside ``path``: its descriptor and name.

    ``tempfile.mkstemp`` makes every file 0600, so a run's findings.json was unreadable to the
    group that could read a report written by ``open()``. Here the file is created with mode
    0666 for the kernel to narrow by the umask, as ``open()`` does. (Reading the umask to chmod
    afterwards would mean setting it, which is not safe with other threads running.)
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary file name after 100 tries")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` on success.

    An interrupted write never leaves a half folder that looks complete. ``path`` may exist as
    an empty folder (it is replaced); if another process finished ``path`` meanwhile, its result
    is kept and ours dropped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_digest(*tensors) -> str:
    """SHA-256 of torch tensors' shapes, dtypes and values: what identifies in-memory data
    (images read from a folder) in a memo key."""
    digest = hashlib.sha256()
    for tensor in tensors:
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def hash_tree(root: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (or of ``root`` itself when it is a file)."""
    root = Path(root)
    if root.is_file():
        return {root.name: sha256_file(root)}
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
