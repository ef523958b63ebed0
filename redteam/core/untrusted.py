"""The one boundary where files from untrusted parties are parsed.

Audit data, model configs, manifests and run folders are handed to us by people we do not trust
(or by careless ones). Everything read from them goes through this module, which bounds what a
parser may be made to do: a JSON value nests at most ``MAX_JSON_DEPTH`` levels, a JSONL line is
at most ``MAX_LINE_CHARS`` characters, a JSON file at most ``MAX_JSON_BYTES``, a number is finite,
and an image may not decode to more than ``MAX_IMAGE_PIXELS`` pixels (a 74-byte PNG can claim
40000×40000). Whatever breaks a bound is an ``InputError`` naming the file (and line) — one line
for the user, exit code 2 — never a RecursionError, a hang or a decompression bomb.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from redteam.core.errors import InputError

MAX_JSON_DEPTH = 64
MAX_LINE_CHARS = 4 * 1024 * 1024
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # 8192 × 8192: far above any audit image


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(text: str, where: str, *, allow_nan: bool = False) -> Any:
    """``text`` as JSON, within the bounds above; ``where`` (``file`` or ``file:line``) names it.

    ``allow_nan`` accepts ``NaN`` (our own run files record an undefined metric so); infinite
    numbers, such as ``1e400``, are always refused.
    """
    kwargs: dict[str, Any] = {"parse_float": _finite_float}
    if not allow_nan:
        kwargs["parse_constant"] = _no_constant
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise InputError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:
        raise InputError(f"{where}: not valid JSON ({exc})") from None
    if isinstance(value, float) and not allow_nan and math.isnan(value):
        raise InputError(f"{where}: not valid JSON (NaN is not a number JSON allows)")
    if _depth(value) > MAX_JSON_DEPTH:
        raise InputError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if "\\ud" in text.lower():  # only a \uD800-\uDFFF escape can make a lone surrogate
        broken = _lone_surrogate(value)
        if broken is not None:
            raise InputError(f"{where}: {broken}: holds a lone surrogate escape (\\ud800 to "
                             f"\\udfff without its pair), which is not text")
    return value


def _lone_surrogate(value: Any) -> str | None:
    """The field (key, or "a string in a list") holding a string that is not valid Unicode
    text, or None. Such a string passes parsing and fails at the first write (UTF-8)."""
    stack: list[tuple[Any, str]] = [(value, "value")]
    while stack:
        node, name = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return name
        elif isinstance(node, dict):
            for key, child in node.items():
                if _lone_surrogate(key) is not None:
                    return "a key"
                stack.append((child, str(key)))
        elif isinstance(node, list):
            stack.extend((child, name) for child in node)
    return None


def read_text_file(path: str | Path, what: str = "file",
                   max_bytes: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of the file ``path``, at most ``max_bytes`` long."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if not path.is_file():
        raise InputError(f"{path}: {what} is not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{path}: {what} is {size:,} bytes; at most {max_bytes:,} are read")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: {what} is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{path}: {what} could not be read ({exc.strerror})") from None


def read_json_file(path: str | Path, what: str = "JSON file", *, allow_nan: bool = False,
                   max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in the file ``path``; ``what`` says what the file should be."""
    text = read_text_file(path, what, max_bytes)
    return parse_json(text, str(path), allow_nan=allow_nan)


def read_json_object(path: str | Path, what: str = "JSON file", **kwargs: Any) -> dict:
    """Like ``read_json_file``, for files whose top level must be an object."""
    value = read_json_file(path, what, **kwargs)
    if not isinstance(value, dict):
        raise InputError(f"{path}: {what} must hold a JSON object, not {type(value).__name__}")
    return value


def read_jsonl_lines(path: str | Path, what: str = "JSONL file") -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line of ``path``, each at most ``MAX_LINE_CHARS``.

    A longer line is refused before it is read whole, so a 50 MB line costs no more than a
    normal one.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found" if not path.exists()
                         else f"{path}: {what} is not a file")
    try:
        with open(path, encoding="utf-8") as handle:
            number = 0
            while True:
                line = handle.readline(MAX_LINE_CHARS + 1)
                if not line:
                    return
                number += 1
                if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
                    raise InputError(f"{path}:{number}: line longer than {MAX_LINE_CHARS:,} "
                                     "characters")
                if line.strip():
                    yield number, line
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


def json_object(where: str, line: str, known: tuple[str, ...]) -> dict:
    """One JSONL line as an object with only ``known`` fields; ``where`` is ``file:line``."""
    obj = parse_json(line, where)
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise InputError(f"{where}: {unknown[0]}: unknown field (known: {', '.join(known)})")
    return obj


def check_text_length(where: str, name: str, value: str, limit: int) -> str:
    """Refuse a text field longer than ``limit`` characters before anything tokenises it."""
    if len(value) > limit:
        raise InputError(f"{where}: {name}: {len(value):,} characters; at most {limit:,} are "
                         "accepted (shorten it or split it into several items)")
    return value


def open_image(file: str | Path, *, decode: bool = True):
    """The PIL image of ``file``, decoded (or only its header read, ``decode=False``).

    An unreadable file, or one whose header claims more than ``MAX_IMAGE_PIXELS`` pixels, is
    bad input naming the file: Pillow's own limit only warns below twice its size, and the
    image would then be decoded into gigabytes.
    """
    from PIL import Image, UnidentifiedImageError

    file = Path(file)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                image.close()
                raise InputError(f"{file}: image claims {width}×{height} pixels, more than the "
                                 f"{MAX_IMAGE_PIXELS:,} accepted (a decompression bomb?)")
            if decode:
                with image:
                    image.load()  # decoded now: the pixels outlive the closed file
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{file}: image refused as a decompression bomb (it claims more "
                         f"than {MAX_IMAGE_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{file}: unreadable image ({exc})") from None
