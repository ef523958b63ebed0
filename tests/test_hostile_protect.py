"""redteam protect and evaluate-protection on images that 8-bit pixels cannot carry unchanged.

Pillow opens a 16-bit PNG, a 48-bit TIFF or a five-page TIFF without complaint and loses data
on the way to 8-bit arrays (a white image, truncated levels, one page), so such files are
refused by name before any work; modes with a faithful 8-bit form (palette, bilevel, CMYK,
transparency) are converted, the conversion recorded in the manifest, and the manifest's L∞ is
checked against a value recomputed here from the files on disk.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from redteam.cli import main
from redteam.commands.protect import MANIFEST, measure_written
from tests.test_hostile_input import refused, refused_in_subprocess

EPS = 8 / 255
FAST = ("--method", "unlearnable-clusters", "--clusters", "2", "--epochs", "1", "--quiet")
RNG = np.random.default_rng(0)


def _noise(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, (8, 8, *shape), dtype=np.uint8)


def _base(root: Path) -> Path:
    """Two class folders of three 8×8 RGB PNGs each: the smallest folder protect accepts."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(_noise(3)).save(root / name / f"{index}.png")
    return root


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _png_16bit_rgb(path: Path) -> None:
    """An 8×8 PNG of 16 bits per channel (Pillow reads it as mode RGB, cut to 8 bits)."""
    rows = b"".join(b"\x00" + RNG.integers(0, 65536, 24, dtype=np.uint16).astype(">u2").tobytes()
                    for _ in range(8))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 16, 2,
                                                                        0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


def _tiff_48bit(path: Path) -> None:
    """An 8×8 uncompressed TIFF of 16 bits per channel (Pillow: mode RGB, raw mode RGB;16L)."""
    pixels = RNG.integers(0, 65536, (8, 8, 3), dtype=np.uint16).astype("<u2").tobytes()
    tags = [(256, 3, 1, 8), (257, 3, 1, 8), (258, 3, 3, "bits"), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, "pixels"), (277, 3, 1, 3), (278, 3, 1, 8), (279, 4, 1, len(pixels))]
    bits_at = 8 + 2 + 12 * len(tags) + 4
    offsets = {"bits": bits_at, "pixels": bits_at + 6}
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        value = offsets.get(value, value) if isinstance(value, str) else value
        ifd += (struct.pack("<HHIHH", tag, kind, count, value, 0) if kind == 3 and count == 1
                else struct.pack("<HHII", tag, kind, count, value))
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
                     + struct.pack("<HHH", 16, 16, 16) + pixels)


def _bmp_rgba(path: Path) -> None:
    """A 32-bit BMP with an alpha mask (BITMAPV4HEADER), which Pillow reads as RGBA."""
    pixels = _noise(4)
    rows = b"".join(pixels[y][:, [2, 1, 0, 3]].tobytes() for y in range(7, -1, -1))
    dib = (struct.pack("<IiiHHIIiiII", 108, 8, 8, 1, 32, 3, len(rows), 2835, 2835, 0, 0)
           + struct.pack("<IIIII", 0xFF0000, 0xFF00, 0xFF, 0xFF000000, 0x73524742)
           + bytes(48))
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(rows), 0, 0,
                                         14 + len(dib)) + dib + rows)


def _frames(path: Path, fmt: str, count: int, **options) -> None:
    frames = [Image.fromarray(_noise(3)) for _ in range(count)]
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], **options)


REFUSED: dict[str, tuple[Callable[[Path], None], str]] = {
    "deep.png": (lambda p: Image.fromarray(RNG.integers(0, 65536, (8, 8), dtype=np.uint16))
                 .save(p), "16-bit grey pixels (mode I;16)"),
    "deep-rgb.png": (_png_16bit_rgb, "16 bits per channel (RGB;16B)"),
    "deep-rgb.tif": (_tiff_48bit, "16 bits per channel (RGB;16L)"),
    "counts.tif": (lambda p: Image.fromarray(RNG.integers(0, 2**31, (8, 8), dtype=np.int32))
                   .save(p), "32-bit integer pixels (mode I)"),
    "depth.tif": (lambda p: Image.fromarray(RNG.random((8, 8), dtype=np.float32)).save(p),
                  "32-bit floating-point pixels (mode F)"),
    "pages.tif": (lambda p: _frames(p, "TIFF", 5), "5 pages or frames"),
    "moving.png": (lambda p: _frames(p, "PNG", 3), "3 pages or frames"),
    "moving.webp": (lambda p: _frames(p, "WEBP", 2, lossless=True), "2 pages or frames"),
    "alpha.bmp": (_bmp_rgba, "RGBA BMP: BMP is written back only as RGB or L, so this image "
                             "would lose its alpha channel"),
    "lab.tif": (lambda p: Image.new("LAB", (8, 8)).save(p), "image mode LAB is not supported"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_protect_refuses_what_8_bits_cannot_carry_by_name(capsys, tmp_path, name):
    data = _base(tmp_path / "photos")
    build, problem = REFUSED[name]
    build(data / "b" / name)
    refused(capsys, tmp_path, ["protect", data, "--out", tmp_path / "out", *FAST],
            f"{data / 'b' / name}: {problem}")


def test_a_16bit_png_is_refused_through_a_real_process(tmp_path):
    data = _base(tmp_path / "photos")
    REFUSED["deep.png"][0](data / "a" / "deep.png")
    refused_in_subprocess(tmp_path, ["protect", data, "--out", tmp_path / "out", *FAST],
                          f"{data / 'a' / 'deep.png'}: 16-bit grey pixels")


def test_evaluate_protection_refuses_a_multipage_tiff_before_training(capsys, tmp_path):
    clean = _base(tmp_path / "clean")
    _frames(clean / "a" / "pages.tif", "TIFF", 5)
    protected = shutil.copytree(clean, tmp_path / "protected")
    test = _base(tmp_path / "test")
    refused(capsys, tmp_path, ["evaluate-protection", clean, protected, "--test-data", test,
                               "--out", tmp_path / "report", "--epochs", "1"],
            f"{clean / 'a' / 'pages.tif'}: 5 pages or frames")


def _palette(transparent: bool) -> Image.Image:
    image = Image.fromarray(RNG.integers(0, 16, (8, 8), dtype=np.uint8), mode="L").convert("P")
    image.putpalette(RNG.integers(0, 256, 48, dtype=np.uint8).tolist())
    if transparent:
        image.info["transparency"] = 3
    return image


def _cmyk_jpeg(path: Path) -> None:
    Image.fromarray(_noise(4), mode="CMYK").save(path, quality=95,
                                                 icc_profile=b"a CMYK profile")


# input -> (mode read, mode written, exact)
CONVERTED: dict[str, tuple[Callable[[Path], None], str, str, bool]] = {
    "cmyk.jpg": (_cmyk_jpeg, "CMYK", "RGB", False),
    "cmyk.tif": (lambda p: Image.fromarray(_noise(4), mode="CMYK").save(p), "CMYK", "RGB",
                 False),
    "palette.png": (lambda p: _palette(False).save(p), "P", "RGB", True),
    "palette-transparent.png": (lambda p: _palette(True).save(p, transparency=3), "P", "RGBA",
                                True),
    "palette-alpha.tif": (lambda p: Image.fromarray(_noise(2), mode="LA").convert("PA").save(p),
                          "PA", "RGBA", True),
    "bilevel.png": (lambda p: Image.fromarray(_noise() > 127).save(p), "1", "L", True),
    "transparent-colour.png": (lambda p: Image.fromarray(_noise(3)).save(
        p, transparency=(0, 0, 0)), "RGB", "RGBA", True),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    """One protect run over the base folder plus every convertible mode, through the CLI."""
    root = tmp_path_factory.mktemp("converted")
    data = _base(root / "photos")
    for name, (build, *_) in CONVERTED.items():
        build(data / "b" / name)
    with Image.open(data / "b" / "palette-alpha.tif") as image:
        assert image.mode == "PA"  # the builder made what the case is about
    code = main([str(a) for a in ("protect", data, "--out", root / "out", *FAST)])
    manifest = json.loads((root / "out" / MANIFEST).read_text())
    return {"code": code, "data": data, "out": root / "out", "manifest": manifest,
            "entries": {e["input"]: e for e in manifest["images"]}}


def test_convertible_modes_are_protected_and_the_conversion_is_recorded(converted):
    assert converted["code"] == 0
    entries = converted["entries"]
    for name, (_, mode_in, mode_out, exact) in CONVERTED.items():
        entry = entries[f"b/{name}"]
        assert entry["conversion"]["from"] == mode_in and entry["conversion"]["to"] == mode_out
        assert entry["conversion"]["exact"] is exact and entry["conversion"]["how"]
        assert entry["mode"] == mode_out
        with Image.open(converted["out"] / entry["output"]) as image:
            assert image.mode == mode_out and image.size == (8, 8)
    kept = [e for e in entries.values() if "conversion" not in e]
    assert sorted(e["input"] for e in kept) == [f"{c}/{i}.png" for c in "ab" for i in range(3)]
    assert sorted(converted["manifest"]["summary"]["converted"]) == sorted(
        f"b/{name}" for name in CONVERTED)


def test_the_manifest_linf_is_what_the_files_differ_by(converted):
    """Recomputed from disk: the written file against the input after its recorded conversion;
    a changed image never reads 0.0, and alpha (real or from transparency) is kept."""
    for entry in converted["entries"].values():
        with Image.open(converted["data"] / entry["input"]) as image:
            before = np.asarray(image.convert(entry["mode"])).astype(np.int16)
        with Image.open(converted["out"] / entry["output"]) as image:
            after = np.asarray(image).astype(np.int16)
        linf = np.abs(after - before).max() / 255
        assert entry["linf"] == pytest.approx(linf, abs=1e-6), entry["input"]
        assert linf > 0, entry["input"]
        if entry["format"] != "JPEG":
            assert entry["within_epsilon"] and linf <= EPS + 1e-9, entry["input"]
        if entry["mode"] in ("RGBA", "LA"):
            assert np.array_equal(after[..., -1], before[..., -1]), entry["input"]


def test_a_colour_space_conversion_drops_the_old_colour_profile(converted):
    with Image.open(converted["data"] / "b" / "cmyk.jpg") as image:
        assert image.info.get("icc_profile") == b"a CMYK profile"
    with Image.open(converted["out"] / "b" / "cmyk.jpg") as image:
        assert image.mode == "RGB" and not image.info.get("icc_profile")


def test_a_copy_that_reads_back_in_another_mode_is_an_error_not_a_figure(tmp_path):
    written = tmp_path / "copy.png"
    Image.fromarray(_noise(3)).save(written)
    record = {"written_mode": "RGBA", "width": 8, "height": 8}
    with pytest.raises(RuntimeError, match="reads back as"):
        measure_written(_noise(4), written, record)
    buffer = io.BytesIO()
    Image.fromarray(_noise(3)).save(buffer, format="PNG")
    written.write_bytes(buffer.getvalue())
    record["written_mode"] = "RGB"
    assert measure_written(np.asarray(Image.open(written)), written, record) == (0.0, 0.0)
