"""Backdoored and clean image classifiers on scikit-learn's handwritten digits (the EBYD demo).

The 8×8 digits are upscaled to 32×32 RGB (white ink on black). Three small Hugging Face ResNets
are trained on the same split: ``clean``; ``badnets`` (Gu et al. 2017: a 4×4 white square in the
bottom-right corner, 10 % of the training images relabelled to 0); ``blend`` (Chen et al. 2017: a
fixed random pattern blended in at 20 %, relabelled to 7). Both backdoors are all-to-one, with
different targets. The builder also writes the defender's clean images, a clean test set and,
per backdoor, the test images with the trigger applied (in the folder of their true class), as
image folders, plus the true triggers as PNG.

Layout under ``zoo_home()``::

    backdoor-<size>-seed<seed>-<version>/
        clean/ badnets/ blend/          models (safetensors + preprocessor_config.json)
        data/clean/ data/test/          class folders of PNG images
        data/poisoned-badnets/ data/poisoned-blend/
        triggers/badnets.png triggers/blend.png
        zoo.json                        targets, accuracies, attack success rates
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from redteam.core.classifiers import small_classifier
from redteam.core.fileio import atomic_dir, atomic_write_json
from redteam.core.training import fixed_threads, train_classifier
from redteam.core.vision import PixelClassifier, save_png

SIZE = 32
BACKDOORS = {"badnets": 0, "blend": 7}  # attack -> target label
SPLITS = {"demo": {"clean": 300, "test": 400, "epochs": 12},
          "test": {"clean": 200, "test": 300, "epochs": 8}}
POISON_RATE = 0.10
ZOO_VERSION = "1"


@dataclass(frozen=True)
class Trigger:
    """x' = (1 - mask) * x + mask * pattern, in pixel space [0, 1]."""

    mask: torch.Tensor  # [1, H, W]
    pattern: torch.Tensor  # [3, H, W]

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return (1 - self.mask) * images + self.mask * self.pattern


def badnets_trigger(size: int = SIZE) -> Trigger:
    mask = torch.zeros(1, size, size)
    mask[:, size - 5:size - 1, size - 5:size - 1] = 1.0
    return Trigger(mask=mask, pattern=torch.ones(3, size, size))


def blend_trigger(size: int = SIZE, alpha: float = 0.2, seed: int = 12345) -> Trigger:
    generator = torch.Generator().manual_seed(seed)
    pattern = torch.rand(3, size, size, generator=generator)
    return Trigger(mask=torch.full((1, size, size), alpha), pattern=pattern)


TRIGGERS = {"badnets": badnets_trigger, "blend": blend_trigger}


def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as ``[N, 3, 32, 32]`` in [0, 1] (white ink on black) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    large = nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bilinear",
                                      align_corners=False).clamp(0, 1)
    return large.repeat(1, 3, 1, 1), torch.tensor(digits.target, dtype=torch.long)


def _split(count: int, sizes: dict, seed: int) -> dict[str, list[int]]:
    order = list(range(count))
    random.Random(f"digits-{seed}").shuffle(order)
    clean, test = sizes["clean"], sizes["test"]
    return {"clean": order[:clean], "test": order[clean:clean + test],
            "train": order[clean + test:]}


def _poison(images: torch.Tensor, labels: torch.Tensor, trigger: Trigger, target: int,
            seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the trigger to POISON_RATE of the non-target images and relabel them to target."""
    candidates = [i for i in range(len(labels)) if labels[i] != target]
    chosen = random.Random(f"poison-{seed}-{target}").sample(
        candidates, int(POISON_RATE * len(labels)))
    images, labels = images.clone(), labels.clone()
    index = torch.tensor(chosen)
    images[index] = trigger.apply(images[index])
    labels[index] = target
    return images, labels


def write_image_folder(images: torch.Tensor, labels: torch.Tensor, folder: Path,
                       prefix: str = "img") -> None:
    for index, (image, label) in enumerate(zip(images, labels.tolist())):
        save_png(image, folder / str(label) / f"{prefix}{index:04d}.png")


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(-1) == labels).float().mean())


def builder_version() -> str:
    digest = hashlib.sha256(ZOO_VERSION.encode())
    import redteam.core.classifiers as classifiers
    import redteam.core.training as training
    import redteam.core.vision as vision

    for source in (Path(__file__), Path(vision.__file__), Path(training.__file__),
                   Path(classifiers.__file__)):
        digest.update(source.read_bytes())
    return f"v{ZOO_VERSION}-{digest.hexdigest()[:10]}"


@fixed_threads()
def build_backdoor_zoo(root: Path | None = None, size: str = "demo", seed: int = 0,
                       quiet: bool = True) -> dict[str, Path]:
    """Build what is missing; return paths: models ``clean``, ``badnets``, ``blend``, folders
    ``data/clean``, ``data/test``, ``data/poisoned-<attack>``, ``triggers/<attack>.png`` (keys
    ``clean-data``, ``test-data``, ``poisoned-<attack>``, ``trigger-<attack>``) and ``zoo.json``."""
    from redteam.zoo.build import zoo_home

    if size not in SPLITS:
        raise ValueError(f"unknown zoo size {size!r}; choose from {sorted(SPLITS)}")
    root = Path(root) if root is not None else zoo_home()
    home = root / f"backdoor-{size}-seed{seed}-{builder_version()}"
    paths = {name: home / name for name in ("clean", *BACKDOORS)}
    paths["clean-data"], paths["test-data"] = home / "data/clean", home / "data/test"
    for attack in BACKDOORS:
        paths[f"poisoned-{attack}"] = home / f"data/poisoned-{attack}"
        paths[f"trigger-{attack}"] = home / f"triggers/{attack}.png"
    paths["zoo.json"] = home / "zoo.json"
    if all(p.exists() for p in paths.values()):
        return paths

    images, labels = digit_images()
    split = _split(len(labels), SPLITS[size], seed)
    part = {name: (images[idx], labels[idx]) for name, idx in split.items()}
    with atomic_dir(home / "data") as tmp:  # (kept as is if an earlier build wrote it)
        write_image_folder(*part["clean"], tmp / "clean")
        write_image_folder(*part["test"], tmp / "test")
        for attack, target in BACKDOORS.items():
            x, y = part["test"]
            keep = y != target
            write_image_folder(TRIGGERS[attack]().apply(x[keep]), y[keep],
                               tmp / f"poisoned-{attack}")
    for attack, make in TRIGGERS.items():
        trigger = make()
        save_png(trigger.mask * trigger.pattern, paths[f"trigger-{attack}"])

    record = {"size": size, "seed": seed, "builder_version": builder_version(),
              "poison_rate": POISON_RATE, "targets": BACKDOORS, "models": {}}
    test_x, test_y = part["test"]
    for name in ("clean", *BACKDOORS):
        train_x, train_y = part["train"]
        if name in BACKDOORS:
            train_x, train_y = _poison(train_x, train_y, TRIGGERS[name](), BACKDOORS[name], seed)
        hf_model, processor = small_classifier("resnet", SIZE, 10, seed)
        model = train_classifier(PixelClassifier(hf_model, processor), train_x, train_y,
                                 epochs=SPLITS[size]["epochs"], seed=seed, quiet=quiet)
        stats = {"clean_accuracy": round(_accuracy(model, test_x, test_y), 4)}
        for attack, target in BACKDOORS.items():
            keep = test_y != target
            poisoned = TRIGGERS[attack]().apply(test_x[keep])
            stats[f"asr_{attack}"] = round(_accuracy(model, poisoned,
                                                     torch.full_like(test_y[keep], target)), 4)
        record["models"][name] = stats
        if not paths[name].exists():
            with atomic_dir(paths[name]) as tmp:
                model.hf_model.save_pretrained(tmp, safe_serialization=True)
                processor.save_pretrained(tmp)
    atomic_write_json(paths["zoo.json"], record)
    return paths


def zoo_record(paths: dict[str, Path]) -> dict:
    return json.loads(paths["zoo.json"].read_text())
