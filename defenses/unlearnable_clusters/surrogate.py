"""The surrogate model Unlearnable Clusters craft their perturbations against.

A user's surrogate is any Hugging Face vision model directory: an image classifier (ResNet,
ViT, ConvNeXt, ...; its penultimate features) or a CLIP (its image embedding), loaded with the
same safety rules as an audited model. Without one, a default surrogate is trained here, label
free, on the images being protected: one round of DeepCluster (a small ResNet learns the k-means
clusters of the images' pixels). No pretrained vision model ships offline, and a surrogate
whose features follow the groups an attacker's labels will follow (one trained on data close to
the attacker's, such as a CLIP or a classifier of your domain) protects better: its clusters
line up with those labels, so the cluster-wise perturbations become the shortcut a model learns.
"""

from __future__ import annotations

import torch

from redteam.core.vision import PixelEncoder

DEFAULT_NOTE = (
    "No --surrogate was given, so a small ResNet was trained here on the images being protected, "
    "without labels, to tell apart the k-means clusters of their pixels (one round of "
    "DeepCluster). Pixel clusters follow shape and colour, not meaning. A surrogate close to "
    "the data an attacker "
    "will train on (a CLIP, or a classifier of your domain) protects better: its clusters follow "
    "the groups the attacker's labels follow, so the cluster-wise perturbations line up with "
    "them. Pass one with --surrogate MODEL_DIR."
)


def pseudo_label_surrogate(images: torch.Tensor, clusters: int = 10, epochs: int = 10,
                           seed: int = 0, quiet: bool = True) -> tuple[PixelEncoder, dict]:
    """Train the default surrogate on ``images`` (``[N, 3, S, S]``) without labels, as one round
    of DeepCluster (Caron et al., ECCV 2018): k-means on the images' pixels (at 16×16) gives
    pseudo-labels, and a small ResNet learns them; its features are the surrogate's."""
    import numpy as np
    from sklearn.cluster import KMeans

    from redteam.core.classifiers import small_classifier
    from redteam.core.training import train_classifier
    from redteam.core.vision import PixelClassifier

    size = int(images.shape[-1])
    pixels = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear",
                                             align_corners=False).flatten(1)
    pseudo = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit_predict(
        pixels.numpy().astype(np.float64))
    pseudo = torch.from_numpy(pseudo).long()
    hf_model, processor = small_classifier("resnet", size, clusters, seed)
    classifier = train_classifier(PixelClassifier(hf_model, processor), images, pseudo,
                                  epochs=epochs, seed=seed, quiet=quiet)
    with torch.no_grad():
        agreement = float((classifier(images).argmax(-1) == pseudo).float().mean())
    encoder = PixelEncoder(classifier.hf_model, processor).eval()
    return encoder, {"path": None, "kind": "default", "model_type": "resnet",
                     "feature": "penultimate (pooled) features",
                     "trained_on": f"the {len(images)} input images, without labels: k-means "
                                   f"pseudo-labels of their pixels ({clusters} clusters), "
                                   f"{epochs} epochs, agreement {agreement:.2f}",
                     "input_size": [size, size], "note": DEFAULT_NOTE}
