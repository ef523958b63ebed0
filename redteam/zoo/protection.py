"""The Unlearnable Clusters demo data: scikit-learn's digits split three ways, and a surrogate.

A publisher wants to release ``data/publish`` (class folders of 32×32 digits) so that nobody can
train a digit classifier on it. The surrogate (a small HF ResNet) is trained on ``data/surrogate``,
a disjoint part of the digits: close to an attacker's data, but not the published images.
``data/test`` is the clean test set of the evaluation. Split sizes depend on ``size``.

Layout under ``zoo_home()``::

    protection-<size>-seed<seed>-<version>/
        surrogate/                      model (safetensors + preprocessor_config.json)
        data/surrogate/ data/publish/ data/test/   class folders of PNG images
        zoo.json                        split sizes, the surrogate's test accuracy
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import torch

from redteam.core.fileio import atomic_dir, atomic_write_json
from redteam.core.training import fixed_threads

SPLITS = {"demo": {"surrogate": 500, "publish": 900, "epochs": 12},
          "test": {"surrogate": 300, "publish": 500, "epochs": 8}}
ZOO_VERSION = "1"


def builder_version() -> str:
    from redteam.zoo import digits

    digest = hashlib.sha256(f"{ZOO_VERSION}-{digits.builder_version()}".encode())
    digest.update(Path(__file__).read_bytes())
    return f"v{ZOO_VERSION}-{digest.hexdigest()[:10]}"


@fixed_threads()
def build_protection_zoo(root: Path | None = None, size: str = "demo", seed: int = 0,
                         quiet: bool = True) -> dict[str, Path]:
    """Build what is missing; return the paths ``surrogate``, ``surrogate-data``, ``publish``,
    ``test`` and ``zoo.json``."""
    from redteam.core.classifiers import small_classifier
    from redteam.core.training import train_classifier
    from redteam.core.vision import PixelClassifier
    from redteam.zoo.build import zoo_home
    from redteam.zoo.digits import SIZE, digit_images, write_image_folder

    if size not in SPLITS:
        raise ValueError(f"unknown zoo size {size!r}; choose from {sorted(SPLITS)}")
    root = Path(root) if root is not None else zoo_home()
    home = root / f"protection-{size}-seed{seed}-{builder_version()}"
    paths = {"surrogate": home / "surrogate", "surrogate-data": home / "data/surrogate",
             "publish": home / "data/publish", "test": home / "data/test",
             "zoo.json": home / "zoo.json"}
    if all(p.exists() for p in paths.values()):
        return paths

    images, labels = digit_images()
    order = list(range(len(labels)))
    random.Random(f"protection-{seed}").shuffle(order)
    first, second = SPLITS[size]["surrogate"], SPLITS[size]["surrogate"] + SPLITS[size]["publish"]
    part = {name: torch.tensor(index) for name, index in
            (("surrogate", order[:first]), ("publish", order[first:second]),
             ("test", order[second:]))}
    with atomic_dir(home / "data") as tmp:
        for name, index in part.items():
            write_image_folder(images[index], labels[index], tmp / name, prefix=f"{name}-")
    hf_model, processor = small_classifier("resnet", SIZE, 10, seed)
    model = train_classifier(PixelClassifier(hf_model, processor), images[part["surrogate"]],
                             labels[part["surrogate"]], epochs=SPLITS[size]["epochs"], seed=seed,
                             quiet=quiet)
    with torch.no_grad():
        accuracy = float((model(images[part["test"]]).argmax(-1) == labels[part["test"]])
                         .float().mean())
    if not paths["surrogate"].exists():
        with atomic_dir(paths["surrogate"]) as tmp:
            model.hf_model.save_pretrained(tmp, safe_serialization=True)
            processor.save_pretrained(tmp)
    atomic_write_json(paths["zoo.json"], {
        "size": size, "seed": seed, "builder_version": builder_version(),
        "images": {name: len(index) for name, index in part.items()},
        "surrogate_test_accuracy": round(accuracy, 4)})
    return paths
