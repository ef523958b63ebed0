"""Unlearnable Clusters (Zhang et al., CVPR 2023, arXiv:2301.01217): the method's steps.

UCs make a dataset useless for training whatever labels the trainer uses. The images are
clustered in a surrogate model's feature space; every image of cluster ``i`` then receives the
same perturbation ``δ_i`` (``‖δ_i‖∞ ≤ ε``), crafted so that the surrogate sees the cluster's
images near the *next* cluster's centre. A model trained on the result learns the cheap
cluster-wise pattern instead of the content, and fails on clean images; because clusters, not
classes, carry the perturbations, the protection does not depend on the labelling.

``UnlearnableClusters(encoder).fit(images)`` runs the three steps in order (features, k-means,
one generator per cluster) and keeps ``labels_``, ``centers_`` and ``perturbations_``;
``apply_perturbation`` adds one to an image at its own resolution, in 8-bit pixel values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from defenses.unlearnable_clusters.generator import PerturbationGenerator

REFERENCE = "arXiv:2301.01217"


def embed(encoder: nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Surrogate features of ``images`` (``[N, 3, H, W]`` in [0, 1]), computed in batches."""
    device = next(encoder.parameters()).device
    with torch.inference_mode():
        parts = [encoder(images[start:start + batch_size].to(device)).float().cpu()
                 for start in range(0, len(images), batch_size)]
    return torch.cat(parts)


def kl_to_center(features: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Mean KL(softmax(feature) ‖ softmax(center)) over the batch: the UC generator loss."""
    log_p = nn.functional.log_softmax(features, dim=-1)
    log_q = nn.functional.log_softmax(center, dim=-1).expand_as(log_p)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


class UnlearnableClusters:
    """Cluster-wise, label-agnostic perturbations crafted against a surrogate encoder.

    ``encoder`` maps ``[N, 3, H, W]`` images in [0, 1] to features (``redteam.core.vision.
    PixelEncoder``). Defaults follow the paper: k = 10 clusters; Adam at lr 1e-4 with weight
    decay 5e-4 and a cosine schedule; ε = 8/255 (the common strict bound; the paper used 16/255).
    """

    def __init__(self, encoder: nn.Module, clusters: int = 10, epsilon: float = 8 / 255,
                 epochs: int = 50, lr: float = 1e-4, weight_decay: float = 5e-4,
                 batch_size: int = 64, seed: int = 0, quiet: bool = True) -> None:
        self.encoder = encoder.eval()
        self.clusters, self.epsilon, self.epochs = clusters, epsilon, epochs
        self.lr, self.weight_decay, self.batch_size = lr, weight_decay, batch_size
        self.seed, self.quiet = seed, quiet
        self.reference = REFERENCE

    def parameters(self) -> dict:
        """The settings a protection manifest records."""
        return {"epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size}

    def fit(self, images: torch.Tensor) -> UnlearnableClusters:
        """Cluster ``images`` (at the surrogate's input size) and craft one δ per cluster."""
        from sklearn.cluster import KMeans

        if len(images) < self.clusters:
            raise ValueError(f"{len(images)} images cannot form {self.clusters} clusters")
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)
        # 1. Features of every image in the surrogate's space.
        features = embed(self.encoder, images, self.batch_size).numpy().astype(np.float64)
        # 2. k-means on those features.
        kmeans = KMeans(n_clusters=self.clusters, n_init=10, random_state=self.seed)
        self.labels_ = kmeans.fit_predict(features)
        self.centers_ = torch.tensor(kmeans.cluster_centers_, dtype=torch.float32)
        # 3. One generator per cluster, pushing its images towards the next cluster's centre.
        perturbations, self.history_ = [], []
        for cluster in range(self.clusters):
            members = images[torch.from_numpy(self.labels_ == cluster)]
            target = self.centers_[(cluster + 1) % self.clusters]
            delta, losses = self._craft(members, target, seed=self.seed * 1000 + cluster)
            perturbations.append(delta)
            self.history_.append({"cluster": cluster, "images": len(members),
                                  "target_cluster": (cluster + 1) % self.clusters,
                                  "kl_before": losses[0], "kl_after": losses[-1]})
        self.perturbations_ = torch.cat(perturbations)
        return self

    def _craft(self, members: torch.Tensor, target: torch.Tensor,
               seed: int) -> tuple[torch.Tensor, list[float]]:
        """Train one generator on one cluster's images; return its δ and the loss before and
        after training."""
        from accelerate import Accelerator
        from tqdm.auto import tqdm

        from redteam.core.training import finish_training, optimizer_step

        torch.manual_seed(seed)
        accelerator = Accelerator(cpu=next(self.encoder.parameters()).device.type == "cpu")
        generator = PerturbationGenerator(tuple(members.shape[-2:]), self.epsilon, seed=seed)
        optimizer = torch.optim.Adam(generator.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay)
        steps_per_epoch = -(-len(members) // self.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, self.epochs * steps_per_epoch))
        generator, optimizer = accelerator.prepare(generator, optimizer)
        encoder, target = self.encoder.to(accelerator.device), target.to(accelerator.device)
        order_generator = torch.Generator().manual_seed(seed)
        progress = tqdm(total=self.epochs * steps_per_epoch, leave=False, disable=self.quiet,
                        desc="craft perturbation")
        losses = [self._loss(generator, members, target, accelerator.device)]
        generator.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(members), generator=order_generator)
            for start in range(0, len(members), self.batch_size):
                batch = members[order[start:start + self.batch_size]].to(accelerator.device)
                loss = kl_to_center(encoder((batch + generator()).clamp(0, 1)), target)
                optimizer_step(accelerator, generator.parameters(), optimizer, loss, progress,
                               schedule)
        losses.append(self._loss(generator, members, target, accelerator.device))
        generator = finish_training(accelerator, generator, progress)
        with torch.no_grad():
            return generator().cpu(), losses

    def _loss(self, generator: nn.Module, members: torch.Tensor, target: torch.Tensor,
              device) -> float:
        with torch.no_grad():
            delta = generator()
            total = sum(float(kl_to_center(self.encoder(
                (members[s:s + self.batch_size].to(device) + delta).clamp(0, 1)), target))
                * len(members[s:s + self.batch_size])
                for s in range(0, len(members), self.batch_size))
        return round(total / len(members), 6)

    def perturbation(self, cluster: int, height: int, width: int) -> torch.Tensor:
        """Cluster ``cluster``'s δ (``[3, height, width]``) at an image's resolution."""
        return resized_perturbation(self.perturbations_[cluster], height, width, self.epsilon)


def resized_perturbation(delta: torch.Tensor, height: int, width: int,
                         epsilon: float) -> torch.Tensor:
    """``delta`` (``[3, h, w]``) at ``height``×``width``; bilinear resizing averages neighbours,
    so the L∞ bound ``epsilon`` still holds."""
    if tuple(delta.shape[-2:]) != (height, width):
        delta = nn.functional.interpolate(delta[None], size=(height, width), mode="bilinear",
                                          align_corners=False)[0]
    return delta.clamp(-epsilon, epsilon)


def apply_perturbation(pixels: np.ndarray, delta: torch.Tensor, epsilon: float) -> np.ndarray:
    """``pixels`` (uint8 ``[H, W]`` or ``[H, W, C]``, C = 3 colours) plus ``delta``
    (``[3, H, W]`` in [0, 1] units), rounded to 8 bits and kept within the integer budget
    ``floor(255 ε)``, so that the saved image itself is within ε of the original.

    A grey-level image receives the mean of the three colour channels' perturbations.
    """
    budget = int(np.floor(255 * epsilon + 1e-6))
    change = delta.numpy() * 255.0
    change = change.mean(0) if pixels.ndim == 2 else np.transpose(change, (1, 2, 0))
    change = np.clip(np.round(change), -budget, budget)
    protected = np.clip(pixels.astype(np.int16) + change.astype(np.int16), 0, 255)
    return protected.astype(np.uint8)
