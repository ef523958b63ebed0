"""``redteam protect``: write an unlearnable copy of an image folder (Unlearnable Clusters).

This is the boundary of ``defenses.unlearnable_clusters``: it validates the folders, reads every
image, runs the method, and writes the protected images in the same layout and formats into a
new folder, atomically, with a manifest (``protection.json``) that records the parameters, the
surrogate, each image's cluster, the SHA-256 of every input and output, and the L∞ and L2 size
of every perturbation measured on the written file. The input folder is only ever read.

Which images are protected, and how (decided from the headers, before any work):

- written back in their own mode: 8-bit RGB, RGBA, grey (L) and grey + alpha (LA);
- converted first, the conversion recorded per file in the manifest (``conversion``): bilevel
  (1) to grey; palette (P) to RGB, or RGBA when it has a transparent entry, and palette + alpha
  (PA) to RGBA; RGB or grey with a transparent colour (PNG tRNS) to RGBA or LA; CMYK to RGB
  (approximate, and the CMYK colour profile is dropped). All but CMYK are exact;
- refused, naming the file (exit 2): more than 8 bits per channel (16-bit grey, 16 bits per
  channel, 32-bit integer or float), several pages or frames (a multipage TIFF, an animated
  PNG or WebP), GIF, any other mode, and a mode the format cannot be written back in (RGBA
  BMP). Each of these would lose data on the way through 8-bit pixels, silently.

The L∞ and L2 of the manifest compare the written file, read back, with the input as read
(after its recorded conversion): a written file that does not read back in the recorded mode
and size is an error, not a measurement.
"""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from redteam import __version__
from redteam.core.errors import InputError
from redteam.core.fileio import atomic_write_json, sha256_file
from redteam.core.metrics import perturbation_size, within_epsilon
from redteam.core.outputs import check_output_path, staged_output
from redteam.core.untrusted import open_image
from redteam.core.vision import (
    PixelEncoder,
    frame_count,
    images_tensor,
    list_image_files,
    not_one_8bit_picture,
)

if TYPE_CHECKING:
    from defenses.unlearnable_clusters import UnlearnableClusters
    from defenses.unlearnable_examples import ClusterErrorMinimizingNoise

    ProtectionMethod = UnlearnableClusters | ClusterErrorMinimizingNoise

MANIFEST = "protection.json"
# Formats written back as they came. JPEG is lossy: its outputs are measured after encoding and
# may exceed ε by the compression error; the manifest flags them.
SAVE_OPTIONS = {"PNG": {}, "BMP": {}, "TIFF": {}, "WEBP": {"lossless": True},
                "JPEG": {"quality": 100, "subsampling": 0}}
KEPT_MODES = ("RGB", "RGBA", "L", "LA")
# Modes converted before the perturbation is added: mode -> (mode written, what was done, exact).
CONVERSIONS = {
    "1": ("L", "bilevel (1-bit) to 8-bit grey", True),
    "P": ("RGB", "palette to RGB", True),
    "PA": ("RGBA", "palette + alpha to RGBA", True),
    "CMYK": ("RGB", "CMYK to RGB by Pillow's formula; the CMYK colour profile is dropped", False),
}
# Conversions into another colour space, after which the input's colour profile is wrong.
NEW_COLOUR_SPACE = ("CMYK",)
# The same for images with a transparent colour or palette entry (PNG tRNS): kept as alpha.
TRANSPARENT_CONVERSIONS = {
    "1": ("LA", "bilevel (1-bit) with a transparent level to grey + alpha", True),
    "L": ("LA", "grey with a transparent level to grey + alpha", True),
    "P": ("RGBA", "palette with transparency to RGBA", True),
    "RGB": ("RGBA", "RGB with a transparent colour to RGBA", True),
}
# Modes each format is written back in (Pillow writes RGBA BMP but reads it back as RGB).
WRITABLE = {"PNG": ("RGB", "RGBA", "L", "LA"), "TIFF": ("RGB", "RGBA", "L", "LA"),
            "WEBP": ("RGB", "RGBA"), "BMP": ("RGB", "L"), "JPEG": ("RGB", "L")}


def parse_epsilon(text: str | float) -> float:
    """``8/255`` or ``0.031`` -> a float in (0, 1)."""
    try:
        value = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise InputError(f"--epsilon {text}: not a number (write 8/255 or 0.031)") from None
    if not 0 < value < 1:
        raise InputError(f"--epsilon {text}: must lie between 0 and 1 (pixel values are in "
                         "[0, 1]; 8/255 is the usual bound)")
    return value


def scan_images(data_dir: Path) -> list[dict]:
    """Every image of ``data_dir`` with its format, mode, size and the mode it is written in
    (headers only): an image protect cannot carry through unchanged is refused here, before
    any work, so that nothing is lost silently."""
    files = list_image_files(data_dir)
    if not files:
        raise InputError(f"{data_dir}: no images found")
    records = []
    for file in files:
        with open_image(file, decode=False) as image:
            fmt, mode, (width, height) = image.format, image.mode, image.size
            _check_format(file, fmt)
            problem = not_one_8bit_picture(image, file)
            transparent = "transparency" in image.info
        if problem:
            raise InputError(f"{file}: {problem}")
        written_mode, conversion = plan_mode(file, fmt, mode, transparent)
        records.append({"file": file, "input": file.relative_to(data_dir).as_posix(),
                        "format": fmt, "mode": mode, "width": width, "height": height,
                        "written_mode": written_mode, "conversion": conversion})
    return records


def _check_format(file: Path, fmt: str | None) -> None:
    if fmt == "GIF":
        raise InputError(f"{file}: GIF keeps at most 256 colours, which cannot carry the "
                         "perturbation; convert it to PNG first")
    if fmt not in SAVE_OPTIONS:
        raise InputError(f"{file}: image format {fmt} is not supported "
                         f"(supported: {', '.join(SAVE_OPTIONS)})")


def plan_mode(file: Path, fmt: str, mode: str, transparent: bool) -> tuple[str, dict | None]:
    """(mode the protected copy is written in, the conversion to record or None).

    Only modes whose pixels survive the trip through 8-bit arrays and back into ``fmt`` are
    accepted: a conversion is named so that the manifest says what was measured against."""
    table = TRANSPARENT_CONVERSIONS if transparent and mode in TRANSPARENT_CONVERSIONS \
        else CONVERSIONS
    if mode in table:
        written, how, exact = table[mode]
        conversion = {"from": mode, "to": written, "how": how, "exact": exact}
    elif mode in KEPT_MODES:
        written, conversion = mode, None
    else:
        known = ", ".join(sorted({*KEPT_MODES, *CONVERSIONS}))
        raise InputError(f"{file}: image mode {mode} is not supported (protect reads {known}); "
                         "convert it to 8-bit RGB first")
    if written not in WRITABLE[fmt]:
        lost = "its alpha channel" if "A" in written else "data"
        raise InputError(f"{file}: {mode} {fmt}: {fmt} is written back only as "
                         f"{' or '.join(WRITABLE[fmt])}, so this image would lose {lost}; "
                         "convert it to PNG first")
    return written, conversion


def _pixels(image, record: dict) -> tuple[np.ndarray, dict]:
    """The image's 8-bit pixels in the mode the copy is written in (after the recorded
    conversion), and the metadata to write back (EXIF, which holds the orientation, and the
    colour profile unless the conversion changed the colour space)."""
    conversion = record["conversion"] or {}
    keys = ("exif",) if conversion.get("from") in NEW_COLOUR_SPACE else ("exif", "icc_profile")
    metadata = {key: image.info[key] for key in keys if image.info.get(key)}
    return np.asarray(image.convert(record["written_mode"])), metadata


def _perturb(pixels: np.ndarray, mode: str, delta: torch.Tensor, epsilon: float) -> np.ndarray:
    """Add ``delta`` to the colour channels; an alpha channel is kept as it was."""
    from defenses.unlearnable_clusters import apply_perturbation

    if mode in ("RGBA", "LA"):
        colour = pixels[..., :-1] if mode == "RGBA" else pixels[..., 0]
        protected = apply_perturbation(colour, delta, epsilon)
        protected = protected if protected.ndim == 3 else protected[..., None]
        return np.concatenate([protected, pixels[..., -1:]], axis=-1)
    return apply_perturbation(pixels, delta, epsilon)


def _encode(pixels: np.ndarray, mode: str, fmt: str, metadata: dict) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(pixels[..., 0] if mode == "L" and pixels.ndim == 3 else pixels)
    image.save(buffer, format=fmt, **SAVE_OPTIONS[fmt],
               **(metadata if fmt != "BMP" else {}))
    return buffer.getvalue()


METHODS = ("auto", "unlearnable-clusters", "error-minimizing")


def protect_folder(data_dir: Path, out: Path, *, method: str = "auto",
                   surrogate: Path | None = None, clusters: int = 10,
                   epsilon: float | str = 8 / 255, epochs: int = 50, seed: int = 0,
                   device: str = "auto", allow_pickle: bool = False, overwrite: bool = False,
                   quiet: bool = False, command: list[str] | None = None) -> dict:
    """Protect every image of ``data_dir`` into the new folder ``out``; return the manifest.

    ``method="auto"`` is Unlearnable Clusters with a ``surrogate`` and cluster-wise
    error-minimising noise without one (``unlearnable-clusters`` without a surrogate trains
    its label-free default, which protects little)."""
    from redteam.core.training import seed_everything
    from redteam.targets import resolve_device

    data_dir, out = Path(data_dir), Path(out)
    eps = parse_epsilon(epsilon)
    method = resolve_method(method, surrogate)
    if clusters < 2:
        raise InputError(f"--clusters {clusters}: at least 2 clusters are needed")
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: image folder not found")
    check_output_path(out, {"input folder": data_dir, "surrogate": surrogate},
                      overwrite=overwrite)
    records = scan_images(data_dir)
    if len(records) < clusters:
        raise InputError(f"{data_dir}: {len(records)} images cannot form --clusters {clusters} "
                         "clusters (lower --clusters)")
    device = resolve_device(device)
    seed_everything(seed)
    if method == "error-minimizing":
        fitted, described = _error_minimizing(records, clusters, eps, seed, device, quiet)
    else:
        fitted, described = _unlearnable_clusters(records, surrogate, clusters, eps, epochs, seed,
                                                  device, allow_pickle, quiet)
    with staged_output(out, "protected images") as staging:
        entries = _write_protected(records, fitted, eps, staging, quiet)
        manifest = _manifest(data_dir, out, method, described, fitted, entries, eps, epsilon,
                             seed, command)
        atomic_write_json(staging / MANIFEST, manifest)
        check_one_output_each(records, staging)
    return manifest


def resolve_method(method: str, surrogate: Path | None) -> str:
    """``auto`` -> the method that protects best with what was given."""
    if method not in METHODS:
        raise InputError(f"--method {method}: unknown (choose from {', '.join(METHODS)})")
    if method == "auto":
        return "unlearnable-clusters" if surrogate else "error-minimizing"
    if method == "error-minimizing" and surrogate:
        raise InputError("--surrogate: error-minimizing needs no surrogate; it is used by "
                         "--method unlearnable-clusters")
    return method


def _working_size(records: list[dict]) -> tuple[int, int]:
    side = 32 if max(max(r["width"], r["height"]) for r in records) <= 32 else 64
    return side, side


def _unlearnable_clusters(records, surrogate, clusters, eps, epochs, seed, device, allow_pickle,
                          quiet) -> tuple[ProtectionMethod, dict]:
    from defenses.unlearnable_clusters import UnlearnableClusters
    from defenses.unlearnable_clusters.surrogate import pseudo_label_surrogate
    from redteam.core.vision import read_resized

    encoder, described = (load_surrogate(surrogate, device, allow_pickle) if surrogate
                          else (None, None))
    size = encoder.size if encoder is not None else _working_size(records)
    images = images_tensor([read_resized(r["file"], size) for r in records])
    if encoder is None:
        encoder, described = pseudo_label_surrogate(images, clusters, seed=seed, quiet=quiet)
        encoder = encoder.to(device)
    fitted = UnlearnableClusters(encoder, clusters=clusters, epsilon=eps, epochs=epochs,
                                 seed=seed, quiet=quiet).fit(images)
    return fitted, described


def _error_minimizing(records, clusters, eps, seed, device,
                      quiet) -> tuple[ProtectionMethod, dict]:
    from defenses.unlearnable_examples import ClusterErrorMinimizingNoise
    from defenses.unlearnable_examples.method import CRAFTING_NOTE
    from redteam.core.vision import read_resized

    images = images_tensor([read_resized(r["file"], _working_size(records)) for r in records])
    fitted = ClusterErrorMinimizingNoise(clusters=clusters, epsilon=eps, device=device,
                                         seed=seed, quiet=quiet).fit(images)
    return fitted, {"path": None, "kind": "crafting model", "model_type": "resnet",
                    "feature": "none: the noise is optimised against a small ResNet trained "
                               "here on the perturbed images' clusters",
                    "input_size": list(images.shape[-2:]), "note": CRAFTING_NOTE}


def _write_protected(records: list[dict], fitted: ProtectionMethod, eps: float, staging: Path,
                     quiet: bool) -> list[dict]:
    """Each image plus its cluster's δ, in its own format, measured after encoding."""
    from tqdm.auto import tqdm

    entries = []
    for record, cluster in tqdm(list(zip(records, fitted.labels_.tolist())),
                                desc="write protected images", disable=quiet):
        original, metadata = _pixels(open_image(record["file"]), record)
        delta = fitted.perturbation(cluster, *original.shape[:2])
        mode = record["written_mode"]
        data = _encode(_perturb(original, mode, delta, eps), mode, record["format"], metadata)
        written = staging / record["input"]
        written.parent.mkdir(parents=True, exist_ok=True)
        written.write_bytes(data)
        linf, l2 = measure_written(original, written, record)
        entries.append({
            "input": record["input"], "output": record["input"], "cluster": cluster,
            "format": record["format"], "mode": mode,
            **({"conversion": record["conversion"]} if record["conversion"] else {}),
            "input_sha256": sha256_file(record["file"]),
            "output_sha256": sha256_file(written), "linf": round(linf, 6),
            "l2": round(l2, 6), "within_epsilon": within_epsilon(linf, eps)})
    return entries


def measure_written(original: np.ndarray, written: Path, record: dict) -> tuple[float, float]:
    """(L∞, L2) of the file as written, read back, against the input's pixels as read (after
    the recorded conversion). The copy must read back as one picture in the recorded mode and
    size: otherwise the figures would compare two different things, so that is an error."""
    with open_image(written, decode=False) as image:
        frames = frame_count(image, written)
    decoded = open_image(written)
    expected = (record["written_mode"], (record["width"], record["height"]), 1)
    if (decoded.mode, decoded.size, frames) != expected:
        raise RuntimeError(f"{written}: written as {expected} (mode, size, frames) but reads "
                           f"back as {(decoded.mode, decoded.size, frames)}")
    return perturbation_size(original, np.asarray(decoded))


def check_one_output_each(records: list[dict], folder: Path) -> None:
    """Every input has exactly one output at the same relative path, and nothing else is there."""
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    expected = sorted([r["input"] for r in records] + [MANIFEST])
    if written != expected:
        missing = sorted(set(expected) - set(written))
        extra = sorted(set(written) - set(expected))
        raise RuntimeError(f"protected folder does not match the input: missing {missing[:3]}, "
                           f"unexpected {extra[:3]}")


def _manifest(data_dir: Path, out: Path, method: str, described: dict,
              fitted: ProtectionMethod, entries: list[dict], eps: float, epsilon_text, seed: int,
              command) -> dict:
    linf = [e["linf"] for e in entries]
    sizes = np.bincount(fitted.labels_, minlength=fitted.clusters)
    return {
        "schema": 1, "tool": f"redteam {__version__}", "method": method,
        "reference": fitted.reference, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command or ["redteam", *sys.argv[1:]],
        "input": str(data_dir), "output": str(out),
        "parameters": {"clusters": fitted.clusters, "epsilon": eps,
                       "epsilon_given": str(epsilon_text), "epsilon_levels":
                       int(np.floor(255 * eps + 1e-6)), "seed": seed,
                       **fitted.parameters(),
                       "working_size": list(fitted.perturbations_.shape[-2:])},
        "surrogate": described,
        "clusters": fitted.history_,
        "summary": {"images": len(entries),
                    "cluster_sizes": {str(c): int(n) for c, n in enumerate(sizes)},
                    "max_linf": max(linf), "mean_l2": round(float(np.mean(
                        [e["l2"] for e in entries])), 6),
                    "all_within_epsilon": all(e["within_epsilon"] for e in entries),
                    "outside_epsilon": [e["output"] for e in entries if not e["within_epsilon"]],
                    "converted": [e["output"] for e in entries if "conversion" in e]},
        "images": entries,
    }


def load_surrogate(path: Path, device: str = "cpu",
                   allow_pickle: bool = False) -> tuple[PixelEncoder, dict]:
    """A user's image classifier or CLIP directory as a ``PixelEncoder``, and its description."""
    from redteam.core.fileio import hash_tree
    from redteam.targets import CLIP_KINDS, detect_kind, load_clip, load_image_classifier

    kind = detect_kind(path)
    if kind == "image-classifier":
        classifier, processor = load_image_classifier(path, device, allow_pickle)
        hf_model, feature = classifier.hf_model, "penultimate (pooled) features"
    elif kind in CLIP_KINDS:
        hf_model, processor = load_clip(path, device, allow_pickle)
        feature = "CLIP image embedding"
    else:
        raise InputError(f"{path}: a {kind} cannot serve as a surrogate "
                         "(need an image classifier or a CLIP model directory)")
    encoder = PixelEncoder(hf_model, processor).to(device).eval()
    return encoder, {"path": str(path), "kind": kind, "model_type": hf_model.config.model_type,
                     "feature": feature, "input_size": list(encoder.size),
                     "files": hash_tree(path)}
