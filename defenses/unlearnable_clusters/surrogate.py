"""The surrogate model Unlearnable Clusters craft their perturbations against.

A user's surrogate is any Hugging Face vision model directory: an image classifier (ResNet,
ViT, ConvNeXt, ...; its penultimate features) or a CLIP (its image embedding), loaded with the
same safety rules as an audited model. Without one, a default surrogate is trained here, label
free, on the images being protected: a small ResNet that predicts how each image was rotated
(RotNet, Gidaris et al., ICLR 2018). No pretrained vision model ships offline, and a surrogate
whose features follow the groups an attacker's labels will follow (one trained on data close to
the attacker's, such as a CLIP or a classifier of your domain) protects better: its clusters
line up with those labels, so the cluster-wise perturbations become the shortcut a model learns.
"""

from __future__ import annotations

from pathlib import Path

import torch

from redteam.errors import InputError
from redteam.vision import PixelEncoder

DEFAULT_NOTE = (
    "No --surrogate was given, so a small ResNet was trained here on the images being protected "
    "to predict their rotation (RotNet, label-free). A surrogate close to the data an attacker "
    "will train on (a CLIP, or a classifier of your domain) protects better: its clusters follow "
    "the groups the attacker's labels follow, so the cluster-wise perturbations line up with "
    "them. Pass one with --surrogate MODEL_DIR."
)


def load_surrogate(path: Path, device: str = "cpu",
                   allow_pickle: bool = False) -> tuple[PixelEncoder, dict]:
    """A user's image classifier or CLIP directory as a ``PixelEncoder``, and its description."""
    from redteam.fileio import hash_tree
    from redteam.targets import detect_kind, load_clip, load_image_classifier

    kind = detect_kind(path)
    if kind == "image-classifier":
        classifier, processor = load_image_classifier(path, device, allow_pickle)
        hf_model, feature = classifier.hf_model, "penultimate (pooled) features"
    elif kind == "clip":
        hf_model, processor = load_clip(path, device, allow_pickle)
        feature = "CLIP image embedding"
    else:
        raise InputError(f"{path}: a {kind} cannot serve as a surrogate "
                         "(need an image classifier or a CLIP model directory)")
    encoder = PixelEncoder(hf_model, processor).to(device).eval()
    return encoder, {"path": str(path), "kind": kind, "model_type": hf_model.config.model_type,
                     "feature": feature, "input_size": list(encoder.size),
                     "files": hash_tree(path)}


def rotation_surrogate(images: torch.Tensor, epochs: int = 5, seed: int = 0,
                       quiet: bool = True) -> tuple[PixelEncoder, dict]:
    """Train the default surrogate on ``images`` (``[N, 3, S, S]``): a small ResNet that tells
    which of four rotations (0, 90, 180, 270 degrees) was applied. No labels are used."""
    from redteam.classifiers import small_classifier
    from redteam.training import train_classifier
    from redteam.vision import PixelClassifier

    size = int(images.shape[-1])
    rotated = torch.cat([torch.rot90(images, turns, dims=(2, 3)) for turns in range(4)])
    turns = torch.arange(4).repeat_interleave(len(images))
    hf_model, processor = small_classifier("resnet", size, 4, seed)
    classifier = train_classifier(PixelClassifier(hf_model, processor), rotated, turns,
                                  epochs=epochs, seed=seed, quiet=quiet)
    with torch.no_grad():
        accuracy = float((classifier(rotated).argmax(-1) == turns).float().mean())
    encoder = PixelEncoder(classifier.hf_model, processor).eval()
    return encoder, {"path": None, "kind": "default", "model_type": "resnet",
                     "feature": "penultimate (pooled) features",
                     "trained_on": f"the {len(images)} input images (rotation prediction, "
                                   f"{epochs} epochs, training accuracy {accuracy:.2f})",
                     "input_size": [size, size], "note": DEFAULT_NOTE}
