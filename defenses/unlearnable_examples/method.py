"""Cluster-wise error-minimising noise (Huang et al., ICLR 2021, arXiv:2101.04898), label-free.

The min-min optimisation of Unlearnable Examples, with cluster pseudo-labels in place of labels:
a crafting model learns to tell the clusters apart on the perturbed images, then every cluster's
perturbation ``δ_c`` takes PGD steps that *decrease* that model's loss (the opposite of an
adversarial example), within ``‖δ_c‖∞ ≤ ε``; the two alternate until the model classifies the
perturbed images almost perfectly. ``δ_c`` then carries everything a model needs to tell the
clusters, and because the clusters follow the content, the classes, apart: a model trained on
the protected copy learns the cheap noise instead of the content and fails on clean images.

``ClusterErrorMinimizingNoise().fit(images)`` runs the steps in order (clusters, then the
alternation) and keeps ``labels_``, ``perturbations_`` and ``history_`` (clustering and
crafting rounds); ``perturbation`` gives one cluster's δ at an image's resolution
(``unlearnable_clusters.apply_perturbation`` writes it in 8-bit pixel values).
"""

from __future__ import annotations

import torch
from torch import nn

from defenses.unlearnable_clusters.method import resized_perturbation

REFERENCE = "arXiv:2101.04898"
CRAFTING_NOTE = (
    "No --surrogate was given, so the images were protected with error-minimising noise "
    "(Unlearnable Examples, Huang et al. 2021) on label-free clusters of their pixels, refined "
    "by self-labelling: one perturbation per cluster, optimised so that a small ResNet "
    "trained here tells the clusters apart from the noise alone. It protects as far as the "
    "clusters follow the classes an attacker labels; a surrogate close to the attacker's data "
    "(--surrogate, Unlearnable Clusters) can do better on data whose pixels cluster poorly.")


class ClusterErrorMinimizingNoise:
    """Class-wise error-minimising noise on self-labelled clusters of the images.

    Defaults follow the paper where it applies: ε = 8/255, 20 PGD steps of 0.8/255 per round,
    stop once the crafting model classifies 99% of the perturbed images into their cluster;
    the crafting model is a small ResNet trained one epoch per round.
    ``min_rounds`` keeps optimising after that point is first reached, which strengthens the
    noise. k = 10 clusters (as in Unlearnable Clusters).
    """

    def __init__(self, clusters: int = 10, epsilon: float = 8 / 255, step_size: float = 0.8 / 255,
                 steps: int = 20, min_rounds: int = 4, max_rounds: int = 20,
                 stop_accuracy: float = 0.99, lr: float = 3e-3, batch_size: int = 64,
                 device: str = "cpu", seed: int = 0, quiet: bool = True) -> None:
        self.clusters, self.epsilon = clusters, epsilon
        self.step_size, self.steps = step_size, steps
        self.min_rounds, self.max_rounds = min_rounds, max_rounds
        self.stop_accuracy, self.lr, self.batch_size = stop_accuracy, lr, batch_size
        self.device, self.seed, self.quiet = device, seed, quiet
        self.reference = REFERENCE

    def parameters(self) -> dict:
        """The settings a protection manifest records."""
        return {"step_size": self.step_size, "steps_per_round": self.steps,
                "min_rounds": self.min_rounds, "max_rounds": self.max_rounds,
                "stop_accuracy": self.stop_accuracy, "lr": self.lr,
                "batch_size": self.batch_size, "crafting_model": "resnet"}

    def fit(self, images: torch.Tensor) -> ClusterErrorMinimizingNoise:
        """Cluster ``images`` (``[N, 3, S, S]`` in [0, 1]) and craft one δ per cluster."""
        from tqdm.auto import tqdm

        from defenses.unlearnable_examples.clusters import self_labelled_clusters
        from redteam.core.classifiers import small_classifier
        from redteam.core.vision import PixelClassifier

        if len(images) < self.clusters:
            raise ValueError(f"{len(images)} images cannot form {self.clusters} clusters")
        # 1. Label-free clusters that follow the content.
        self.labels_, clustering = self_labelled_clusters(
            images, self.clusters, seed=self.seed, quiet=self.quiet)
        pseudo = torch.from_numpy(self.labels_).long()
        # 2. The crafting model and zero noise.
        hf_model, processor = small_classifier("resnet", int(images.shape[-1]), self.clusters,
                                               self.seed)
        model = PixelClassifier(hf_model, processor).to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        delta = torch.zeros(self.clusters, *images.shape[1:])
        order_generator = torch.Generator().manual_seed(self.seed)
        # 3. Alternate: one epoch of the model on x + δ, then PGD steps lowering its loss.
        self.history_ = [{"step": "clustering", **entry} for entry in clustering]
        for round_ in tqdm(range(1, self.max_rounds + 1), desc="craft noise", leave=False,
                           disable=self.quiet):
            self._train_epoch(model, optimizer, images, pseudo, delta, order_generator)
            delta, loss = self._minimise(model, images, pseudo, delta)
            accuracy = self._accuracy(model, images, pseudo, delta)
            self.history_.append({"step": "crafting", "round": round_, "loss": round(loss, 6),
                                  "accuracy": round(accuracy, 4)})
            if accuracy >= self.stop_accuracy and round_ >= self.min_rounds:
                break
        self.perturbations_ = delta
        return self

    def _batches(self, count: int, order: torch.Tensor | None = None):
        order = torch.arange(count) if order is None else order
        for start in range(0, count, self.batch_size):
            yield order[start:start + self.batch_size]

    def _perturbed(self, images, pseudo, delta, index) -> torch.Tensor:
        return (images[index] + delta[pseudo[index]]).clamp(0, 1).to(self.device)

    def _train_epoch(self, model, optimizer, images, pseudo, delta, generator) -> None:
        model.train()
        for index in self._batches(len(images), torch.randperm(len(images), generator=generator)):
            loss = nn.functional.cross_entropy(model(self._perturbed(images, pseudo, delta,
                                                                     index)),
                                               pseudo[index].to(self.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()

    def _minimise(self, model, images, pseudo, delta) -> tuple[torch.Tensor, float]:
        """``steps`` signed-gradient steps on every δ_c that lower the model's loss on its
        cluster's perturbed images, projected back onto the ε-ball."""
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        total = 0.0
        for _ in range(self.steps):
            variable = delta.clone().to(self.device).requires_grad_(True)
            total = 0.0
            for index in self._batches(len(images)):
                perturbed = (images[index].to(self.device) + variable[pseudo[index]]).clamp(0, 1)
                loss = nn.functional.cross_entropy(model(perturbed), pseudo[index].to(self.device),
                                                   reduction="sum")
                loss.backward()
                total += float(loss.detach())
            step = self.step_size * variable.grad.sign()
            delta = (variable.detach() - step).clamp(-self.epsilon, self.epsilon).cpu()
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return delta, total / len(images)

    def _accuracy(self, model, images, pseudo, delta) -> float:
        with torch.inference_mode():
            hits = sum(int((model(self._perturbed(images, pseudo, delta, index)).argmax(-1).cpu()
                            == pseudo[index]).sum()) for index in self._batches(len(images)))
        return hits / len(images)

    def perturbation(self, cluster: int, height: int, width: int) -> torch.Tensor:
        """Cluster ``cluster``'s δ (``[3, height, width]``) at an image's resolution."""
        return resized_perturbation(self.perturbations_[cluster], height, width, self.epsilon)
