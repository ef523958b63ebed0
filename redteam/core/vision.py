"""Image classifiers and image folders, in the pixel space the backdoor and adversarial methods use.

Backdoor triggers and adversarial perturbations live in pixel space ([0, 1] RGB at the model's
input size), so an audited Hugging Face ``*ForImageClassification`` model is wrapped with its own
preprocessing (resize, normalisation) inside: ``PixelClassifier(images) -> logits``, and
``PixelEncoder(images) -> features`` for a surrogate's feature space. Image audit
data is a folder of class sub-folders (torchvision's ImageFolder convention), read strictly: an
unreadable image or a class the model does not know is reported with the file, exit code 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from redteam.core.errors import InputError
from redteam.core.untrusted import open_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def input_size(processor) -> tuple[int, int]:
    """(height, width) the processor feeds the model."""
    size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop",
                                                            False) else None
    size = size or getattr(processor, "size", None) or {}
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        return edge, edge
    raise InputError(f"preprocessor size {size!r} is not understood (need height/width)")


class PixelModel(nn.Module):
    """An HF vision model taking ``[N, 3, H, W]`` images in [0, 1].

    The processor's resizing and normalisation happen inside, differentiably, so attacks,
    trigger searches and protective perturbations work on the pixels a user would see.
    """

    def __init__(self, hf_model: nn.Module, processor) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.size = input_size(processor)
        mean = getattr(processor, "image_mean", None) or [0.0, 0.0, 0.0]
        std = getattr(processor, "image_std", None) or [1.0, 1.0, 1.0]
        normalise = bool(getattr(processor, "do_normalize", True))
        self.register_buffer("mean", torch.tensor(mean if normalise else [0.0] * 3)
                             .view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std if normalise else [1.0] * 3)
                             .view(1, 3, 1, 1), persistent=False)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the model's input size and normalise, as its processor would."""
        if tuple(images.shape[-2:]) != self.size:
            images = nn.functional.interpolate(images, size=self.size, mode="bilinear",
                                               align_corners=False)
        return (images - self.mean) / self.std


class PixelClassifier(PixelModel):
    """An HF ``*ForImageClassification`` model on pixels in [0, 1]; returns logits."""

    @property
    def num_classes(self) -> int:
        return int(self.hf_model.config.num_labels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.hf_model(pixel_values=self.pixel_values(images)).logits


class PixelEncoder(PixelModel):
    """Image features on pixels in [0, 1]: a CLIP's image embedding, or the penultimate
    (pooled) features of an image classifier (the input of its classification head)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.pixel_values(images)
        if hasattr(self.hf_model, "get_image_features"):
            return self.hf_model.get_image_features(pixel_values=pixels)
        output = self.hf_model.base_model(pixel_values=pixels)
        pooled = getattr(output, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        return output.last_hidden_state[:, 0]


@dataclass
class ImageFolder:
    """Images of a class-folder tree as one tensor, labelled with the model's label ids."""

    path: Path
    images: torch.Tensor  # [N, 3, H, W] float in [0, 1]
    labels: torch.Tensor  # [N] long, the model's label ids
    files: list[Path] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)  # folder name -> label id

    def __len__(self) -> int:
        return len(self.files)


def label_ids(model_config) -> dict[str, int]:
    """Folder names a class may have -> label id: the label names, and the ids themselves."""
    id2label = getattr(model_config, "id2label", None) or {}
    names = {str(name): int(i) for i, name in id2label.items()}
    names.update({str(i): int(i) for i in range(int(model_config.num_labels))})
    return names


def list_image_files(folder: str | Path, ignore: tuple[str, ...] = ()) -> list[Path]:
    """Every image under ``folder`` (any depth, sorted); hidden files and the top-level files
    named in ``ignore`` are skipped, any other file is bad input, so that nothing in a dataset
    is silently left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found")
    files = []
    for file in sorted(folder.rglob("*")):
        relative = file.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        if relative.as_posix() in ignore:
            continue
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{file}: not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
        files.append(file)
    return files


DEEP_MODES = {"I;16": "16-bit grey", "I;16B": "16-bit grey", "I;16L": "16-bit grey",
              "I;16N": "16-bit grey", "I;16S": "16-bit grey", "I": "32-bit integer",
              "F": "32-bit floating-point"}
DEEP_RAWMODE = re.compile(r";(16|32|64)")


def _rawmode(image) -> str:
    """How the file stores its pixels (Pillow's raw mode), or "" when the header does not say."""
    tile = getattr(image, "tile", None) or []
    args = getattr(tile[0], "args", None) if tile else None
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return rawmode if isinstance(rawmode, str) else ""


def frame_count(image, file: Path) -> int:
    """Pages or frames of an opened image (1 for most files); a broken frame table is bad
    input naming ``file``, not a crash, since counting walks the file's own offsets."""
    try:
        return int(getattr(image, "n_frames", 1) or 1)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"{file}: unreadable image ({exc})") from None


def not_one_8bit_picture(image, file: Path) -> str | None:
    """Why ``image`` (its header read) cannot be read as one 8-bit picture, or None.

    Pillow reads such files without complaint and loses data on the way to 8-bit RGB: a 16-bit
    grey PNG clips to white, 16 bits per channel are cut to 8, and only the first page of a
    TIFF (or frame of an animation) is read. Commands that write or measure pixels refuse these
    rather than report on an image that is not the user's."""
    if image.mode in DEEP_MODES:
        return (f"{DEEP_MODES[image.mode]} pixels (mode {image.mode}) cannot be carried in "
                "8 bits without losing their levels; convert the image to 8 bits first")
    deep = DEEP_RAWMODE.search(_rawmode(image)) if image.format != "BMP" else None
    if deep:  # BMP's 16-bit raw modes are 5-6-5 bits: less than 8 a channel
        return (f"{deep.group(1)} bits per channel ({_rawmode(image)}) would be cut to 8; "
                "convert the image to 8 bits per channel first")
    frames = frame_count(image, file)
    if frames > 1:
        return (f"{frames} pages or frames (multipage or animated); only the first would be "
                "read: split it into one file per page first")
    return None


def check_one_8bit_picture(file: Path) -> None:
    """Refuse ``file`` (headers only) when ``not_one_8bit_picture`` finds a problem."""
    with open_image(file, decode=False) as image:
        problem = not_one_8bit_picture(image, file)
    if problem:
        raise InputError(f"{file}: {problem}")


def read_resized(file: Path, size: tuple[int, int]) -> np.ndarray:
    """``file`` as RGB ``[H, W, 3]`` float in [0, 1] at ``size`` (height, width)."""
    return resized_array(open_image(file), size)


def resized_array(image, size: tuple[int, int]) -> np.ndarray:
    """A PIL image as RGB ``[H, W, 3]`` float in [0, 1] at ``size`` (height, width)."""
    from PIL import Image

    pixels = image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(pixels, dtype=np.float32) / 255.0


def images_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    """``[H, W, 3]`` arrays in [0, 1] -> one ``[N, 3, H, W]`` tensor."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_image_folder(path: str | Path, size: tuple[int, int],
                      classes: dict[str, int]) -> ImageFolder:
    """Read ``path/<class>/<image>`` into tensors at ``size``; ``classes`` maps folder names to
    the model's label ids (see ``label_ids``). Files beside the class folders are ignored."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: image folder not found")
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{path}: no class sub-folders (expected {path}/<class>/<image>)")
    images, labels, files, used = [], [], [], {}
    for folder in folders:
        if folder.name not in classes:
            known = ", ".join(sorted(classes, key=lambda c: classes[c])[:12])
            raise InputError(f"{folder}: class {folder.name!r} is not one of the model's labels "
                             f"({known})")
        used[folder.name] = classes[folder.name]
        for file in list_image_files(folder):
            images.append(read_resized(file, size))
            labels.append(classes[folder.name])
            files.append(file)
    if not images:
        raise InputError(f"{path}: no images in the class sub-folders")
    return ImageFolder(path=path, images=images_tensor(images), labels=torch.tensor(labels),
                       files=files, classes=used)


def save_png(image: np.ndarray | torch.Tensor, path: str | Path) -> Path:
    """Write an image (``[3, H, W]`` or ``[H, W, 3]`` in [0, 1], or uint8 ``[H, W, 3]``) as PNG."""
    from PIL import Image

    from redteam.core.fileio import atomic_write_bytes

    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def random_crop_flip(images: torch.Tensor, generator: torch.Generator,
                     padding: int = 4) -> torch.Tensor:
    """The standard training augmentation: pad by ``padding`` (zeros), crop back at a random
    offset, flip horizontally with probability ½; one draw per image."""
    count, _, height, width = images.shape
    padded = nn.functional.pad(images, (padding,) * 4)
    rows = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    cols = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    flips = torch.rand(count, generator=generator) < 0.5
    out = torch.stack([padded[i, :, r:r + height, c:c + width]
                       for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist()))])
    out[flips] = out[flips].flip(-1)
    return out


def random_affine(images: torch.Tensor, generator: torch.Generator, rotation: float = 0.25,
                  scale: float = 0.2, shift: float = 0.2) -> torch.Tensor:
    """Small random rotations (radians), scalings and shifts (shares of the image), one per
    image, and a random brightness in [0.6, 1]: the views a label-free learner is taught to
    treat as the same image."""
    count = len(images)
    angle = (torch.rand(count, generator=generator) * 2 - 1) * rotation
    factor = 1 + (torch.rand(count, generator=generator) * 2 - 1) * scale
    dx, dy = ((torch.rand(count, generator=generator) * 2 - 1) * shift for _ in range(2))
    cos, sin = factor * torch.cos(angle), factor * torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, dx], -1), torch.stack([sin, cos, dy], -1)], 1)
    grid = nn.functional.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    moved = nn.functional.grid_sample(images, grid, align_corners=False)
    brightness = 0.6 + 0.4 * torch.rand(count, 1, 1, 1, generator=generator)
    return (moved * brightness.to(images)).clamp(0, 1)


def jpeg_reencoded(files: list[Path], size: tuple[int, int], quality: int = 75) -> torch.Tensor:
    """Every image of ``files`` re-encoded as JPEG at ``quality`` (at its own resolution, as an
    attacker would), decoded and read at ``size``: ``[N, 3, H, W]`` in [0, 1]."""
    import io

    from PIL import Image

    arrays = []
    for file in files:
        buffer = io.BytesIO()
        open_image(file).convert("RGB").save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        arrays.append(resized_array(Image.open(buffer), size))
    return images_tensor(arrays)
