"""Small Hugging Face image classifiers built from a config, trained here from scratch.

No pretrained vision model can be downloaded on the project's machines, so the demo zoo, the
default surrogate of ``redteam protect`` and the models ``redteam evaluate-protection`` trains
are built here. They are ordinary ``*ForImageClassification`` models with an image processor:
saved with ``save_pretrained``, they load like any user's model.
"""

from __future__ import annotations

ARCHITECTURES = ("resnet", "convnext", "vit")


def small_classifier(architecture: str, size: int, num_labels: int, seed: int = 0):
    """A small ``architecture`` classifier for ``size``×``size`` RGB images, and its processor
    (inputs in [0, 1] normalised with mean 0.5 and std 0.5)."""
    import torch
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    labels = {"num_labels": num_labels, "id2label": {i: str(i) for i in range(num_labels)},
              "label2id": {str(i): i for i in range(num_labels)}}
    torch.manual_seed(seed)
    if architecture == "resnet":
        model = ResNetForImageClassification(ResNetConfig(
            num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1],
            layer_type="basic", downsample_in_first_stage=False, **labels))
    elif architecture == "convnext":
        model = ConvNextForImageClassification(ConvNextConfig(
            num_channels=3, patch_size=2, num_stages=3, hidden_sizes=[24, 48, 96],
            depths=[1, 1, 1], image_size=size, **labels))
    elif architecture == "vit":
        model = ViTForImageClassification(ViTConfig(
            image_size=size, patch_size=max(2, size // 8), num_channels=3, hidden_size=64,
            num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, **labels))
    else:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")
    processor = ViTImageProcessor(size={"height": size, "width": size}, do_resize=True,
                                  do_normalize=True, image_mean=[0.5, 0.5, 0.5],
                                  image_std=[0.5, 0.5, 0.5])
    return model, processor
