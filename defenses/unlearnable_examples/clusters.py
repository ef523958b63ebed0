"""Label-free clusters that follow the content, for cluster-wise protective noise.

A cluster-wise shortcut blocks an attacker's labels only as far as the clusters follow them:
with clusters that match the classes, class-wise noise drops a digit learner to near chance;
with k-means of raw pixels (which agree with the digit classes on about 80% of the images) it
barely works, because the images in the "wrong" cluster still teach the content. So the
clusters are refined by self-labelling (as in SCAN, Van Gansbeke et al., ECCV 2020): Ward
clustering of the coarse pixels gives pseudo-labels, a small ResNet learns them under random
shifts, rotations and brightness, and its predictions become the next round's pseudo-labels.
Each round the network keeps what is consistent across views and relabels outliers.
"""

from __future__ import annotations

import numpy as np
import torch


def coarse_pixel_clusters(images: torch.Tensor, clusters: int, side: int = 8) -> np.ndarray:
    """Ward clustering of the images averaged down to ``side``×``side`` pixels."""
    from sklearn.cluster import AgglomerativeClustering

    pixels = torch.nn.functional.adaptive_avg_pool2d(images, side).flatten(1)
    return AgglomerativeClustering(n_clusters=clusters, linkage="ward").fit_predict(
        pixels.numpy().astype(np.float64))


def self_labelled_clusters(images: torch.Tensor, clusters: int = 10, rounds: int = 4,
                           epochs: int = 8, seed: int = 0,
                           quiet: bool = True) -> tuple[np.ndarray, list[dict]]:
    """Cluster ``images`` (``[N, 3, H, W]`` in [0, 1]) without labels; the cluster of every
    image and, per round, how many images changed cluster and the cluster sizes."""
    from redteam.core.classifiers import small_classifier
    from redteam.core.training import train_classifier
    from redteam.core.vision import PixelClassifier, random_affine

    assignment = coarse_pixel_clusters(images, clusters)
    history = [{"round": 0, "how": "Ward clustering of 8x8 pixels",
                "sizes": np.bincount(assignment, minlength=clusters).tolist()}]
    size = int(images.shape[-1])
    for round_ in range(1, rounds + 1):
        hf_model, processor = small_classifier("resnet", size, clusters, seed + round_)
        model = train_classifier(PixelClassifier(hf_model, processor), images,
                                 torch.from_numpy(assignment).long(), epochs=epochs,
                                 seed=seed + round_, augment=random_affine, quiet=quiet)
        device = next(model.parameters()).device
        with torch.inference_mode():
            predicted = torch.cat([model(images[s:s + 256].to(device)).argmax(-1).cpu()
                                   for s in range(0, len(images), 256)]).numpy()
        if len(np.unique(predicted)) < clusters:
            history.append({"round": round_, "how": "stopped: a cluster emptied"})
            break
        changed = int((predicted != assignment).sum())
        assignment = predicted
        history.append({"round": round_, "how": "self-labelling", "changed": changed,
                        "sizes": np.bincount(assignment, minlength=clusters).tolist()})
    return assignment, history
