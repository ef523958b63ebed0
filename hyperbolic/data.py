"""ViSU quadruplets (Poppi et al., ECCV 2024): the data HySAC trains and is evaluated on.

One JSON object per line: ``{"safe_image", "unsafe_image", "safe_caption", "unsafe_caption"}``,
image paths relative to the JSONL file (docs/data-formats.md). Read strictly at the boundary:
a bad line, a missing field or a missing image is reported as ``file:line: field: problem``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from redteam.core.errors import InputError
from redteam.core.untrusted import check_text_length, json_object, read_jsonl_lines

FIELDS = ("safe_image", "unsafe_image", "safe_caption", "unsafe_caption")
MAX_FIELD_CHARS = 10_000  # captions are tokenised to CLIP's 77 tokens; paths are short


@dataclass(frozen=True)
class Quadruplet:
    safe_image: Path
    unsafe_image: Path
    safe_caption: str
    unsafe_caption: str
    line: int


def load_quadruplets(path: str | Path) -> list[Quadruplet]:
    """Every quadruplet of the JSONL ``path``, with image paths resolved against its folder."""
    path = Path(path)
    rows = []
    for number, line in read_jsonl_lines(path, "quadruplet file"):
        where = f"{path}:{number}"
        obj = json_object(where, line, FIELDS)
        for name in FIELDS:
            value = obj.get(name)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{where}: {name}: expected a non-empty string")
            check_text_length(where, name, value, MAX_FIELD_CHARS)
        images = {name: _image(where, name, path.parent, obj[name])
                  for name in ("safe_image", "unsafe_image")}
        rows.append(Quadruplet(images["safe_image"], images["unsafe_image"],
                               obj["safe_caption"], obj["unsafe_caption"], number))
    if not rows:
        raise InputError(f"{path}: no quadruplets")
    return rows


def _image(where: str, name: str, folder: Path, given: str) -> Path:
    """The image a line names, resolved against the JSONL's folder: a path the file system
    cannot hold (a NUL, a name past 255 bytes) or a file that is not an image (``/etc/passwd``)
    is refused here, naming the line, not later inside a probe."""
    from redteam.core.fileio import path_problem
    from redteam.core.untrusted import open_image

    problem = path_problem(folder / given)
    if problem is not None:
        raise InputError(f"{where}: {name}: not a usable file path ({problem})")
    image = (folder / given).resolve()
    if not image.is_file():
        raise InputError(f"{where}: {name}: image {given} not found")
    try:
        open_image(image, decode=False).close()
    except InputError as exc:
        raise InputError(f"{where}: {name}: {exc}") from None
    return image


def hash_quadruplets(path: str | Path, rows: list[Quadruplet]) -> dict[str, str]:
    """SHA-256 of the JSONL ``path`` and of every image its quadruplets name (for the record)."""
    from redteam.core.fileio import sha256_file

    path = Path(path)
    images = sorted({image for r in rows for image in (r.safe_image, r.unsafe_image)})
    files = {path.name: sha256_file(path)}
    for image in images:
        try:
            name = str(image.relative_to(path.parent.resolve()))
        except ValueError:
            name = str(image)
        files[name] = sha256_file(image)
    return files
