"""Does a protected image folder resist being learnt? (Unlearnable Clusters, Zhang et al.,
CVPR 2023, arXiv:2301.01217.)

What the protection promises is measured the way the paper does: train a fresh model, of
another architecture than the surrogate, once on the clean images and once on their protected
copies, and compare both models' accuracy on clean test images. ``protection.unlearnability``
does it with the original labels, ``protection.label_agnostic`` with a coarser grouping of the
classes (the protection must not depend on the labels an attacker chooses), and
``protection.perturbation_budget`` checks that every protected image is within ε of its
original. ``redteam evaluate-protection`` prepares the folders (``ProtectionData``) and runs
this suite through the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from redteam.core.fileio import tensors_digest
from redteam.core.findings import Evidence, Finding, Metric
from redteam.core.metrics import perturbation_size, within_epsilon
from redteam.core.settings import choice, integer, rate
from redteam.core.training import seed_everything
from redteam.core.untrusted import open_image
from redteam.core.vision import ImageFolder, save_png
from redteam.probes.base import Probe, ProbeContext, register
from redteam.targets import Target

UNLEARNABLE_CLUSTERS = "arXiv:2301.01217"
UNLEARNABLE_EXAMPLES = "arXiv:2101.04898"
LEARNERS = ("convnext", "resnet", "vit")
EXAMPLES = 6


@dataclass
class ProtectionData:
    """Clean images, their protected copies (same relative paths) and clean test images, read
    at one size; the coarser grouping of the classes; what the protection manifest says."""

    clean: ImageFolder
    protected: ImageFolder
    test: ImageFolder
    classes: list[str]
    grouping: list[list[str]]
    epsilon: float
    manifest: dict = field(default_factory=dict)

    def labels(self, labelling: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(training labels, test labels, number of labels) under ``labelling``."""
        if labelling == "original labels":
            return self.clean.labels, self.test.labels, len(self.classes)
        coarse = torch.tensor([next(g for g, group in enumerate(self.grouping) if name in group)
                               for name in self.classes])
        return coarse[self.clean.labels], coarse[self.test.labels], len(self.grouping)


class ProtectionProbe(Probe):
    suite = "protection"
    kinds: ClassVar[tuple[str, ...]] = ("image-folder",)
    data = "clean images, their protected copies and clean test images (redteam " \
           "evaluate-protection)"
    references = (UNLEARNABLE_CLUSTERS, UNLEARNABLE_EXAMPLES)
    tags = ("protection", "unlearnable-examples")

    def missing_data(self, data: Any) -> str | None:
        if not isinstance(data, ProtectionData):
            return "runs from redteam evaluate-protection CLEAN PROTECTED --test-data TEST"
        return None


def train_and_test(learner: str, images: torch.Tensor, labels: torch.Tensor,
                   test: torch.Tensor, test_labels: torch.Tensor, num_labels: int, epochs: int,
                   seed: int, device: str, quiet: bool, augment=None) -> float:
    """Clean test accuracy of a fresh ``learner`` trained on ``images`` (no augmentation unless
    ``augment`` is given, see ``train_classifier``)."""
    from redteam.core.classifiers import small_classifier
    from redteam.core.training import train_classifier
    from redteam.core.vision import PixelClassifier

    seed_everything(seed)
    hf_model, processor = small_classifier(learner, int(images.shape[-1]), num_labels, seed)
    model = train_classifier(PixelClassifier(hf_model, processor).to(device), images, labels,
                             epochs=epochs, seed=seed, augment=augment, quiet=quiet)
    with torch.inference_mode():
        predictions = torch.cat([model(test[s:s + 256].to(device)).argmax(-1).cpu()
                                 for s in range(0, len(test), 256)])
    return float((predictions == test_labels).float().mean())


class Learnability(ProtectionProbe):
    """Train the learner on the clean and on the protected folder under one labelling; judge
    the share of what clean data teaches (above chance) that the protected data still
    teaches."""

    labelling: ClassVar[str]
    at_most: ClassVar[str] = "critical"  # the highest severity a failure gets
    defaults: ClassVar[dict[str, Any]] = {
        "learner": choice("convnext", LEARNERS), "epochs": integer(15, low=1),
        "max_learnability": rate(0.5)}
    remediation = ("Protect with a surrogate closer to the data an attacker would train on "
                   "(--surrogate), or a larger --epsilon if a visible change is acceptable.")

    def run(self, target: Target, data: ProtectionData, ctx: ProbeContext) -> list[Finding]:
        learner, epochs = self.config["learner"], int(self.config["epochs"])
        train_labels, test_labels, count = data.labels(self.labelling)
        test_key = tensors_digest(data.test.images, test_labels)
        accuracy = {
            name: ctx.memoised(
                ("trained and tested", tensors_digest(images, train_labels), test_key),
                lambda images=images: train_and_test(
                    learner, images, train_labels, data.test.images, test_labels, count, epochs,
                    ctx.seed, ctx.device, ctx.quiet, self.augmentation()))
            for name, images in self.training_sets(data).items()}
        chance = torch.bincount(test_labels, minlength=count).max().item() / len(test_labels)
        accuracy["chance (majority class)"] = chance
        row = {"labelling": self.labelling, **{k: round(v, 4) for k, v in accuracy.items()}}
        details = {"tables": {f"Test accuracy on clean test images{self.condition()}": [row],
                              **self.extra_tables(data)},
                   "split_scores": {self.labelling: {k: v for k, v in accuracy.items()
                                                     if not k.startswith("chance")}},
                   "chart_title": f"Clean test accuracy of a {learner} trained on each "
                                  f"folder{self.condition()}",
                   "chart_y_label": "test accuracy"}
        if self.labelling != "original labels":
            details["groups"] = groups_text(data.grouping)
        return [self.judge(accuracy["trained on clean"], accuracy["trained on protected"],
                           chance, learner, details, data)]

    def condition(self) -> str:
        """What the attacker did before or while training, as a phrase for the report."""
        return ""

    def training_sets(self, data: ProtectionData) -> dict[str, torch.Tensor]:
        """The two training sets compared: the clean images and their protected copies."""
        return {"trained on clean": data.clean.images,
                "trained on protected": data.protected.images}

    def augmentation(self):
        """The batch transform the learner trains with (none: the strictest test)."""
        return None

    def extra_tables(self, data: ProtectionData) -> dict:
        return {}

    def judge(self, clean_acc: float, protected_acc: float, chance: float, learner: str,
              details: dict, data: ProtectionData) -> Finding:
        reach = clean_acc - chance
        if reach < 0.05:
            return self.finding(
                "error", "medium",
                f"Trained on the clean images, the {learner} scores {clean_acc:.2f} with "
                f"{self.labelling} (chance {chance:.2f}): it did not learn the task, so the "
                "protection cannot be judged. Raise --epochs or use more images.",
                details=details, remediation="")
        left = max(0.0, (protected_acc - chance) / reach)
        bound = self.config["max_learnability"]
        failed = left > bound
        verdict = ("still teaches a model most of the task: the protection is weak" if failed
                   else "is close to useless for training: the protection holds")
        metric = Metric(name="learnability left", value=round(left, 4), threshold=bound,
                        higher_is_worse=True,
                        baselines={"trained on clean": round(clean_acc, 4),
                                   "trained on protected": round(protected_acc, 4),
                                   "chance": round(chance, 4)})
        summary = (f"With {self.labelling}{self.condition()}, a {learner} trained on the clean "
                   f"images scores {clean_acc:.2f} on the clean test images; trained on the "
                   f"protected copies, {protected_acc:.2f} (chance {chance:.2f}). The protected "
                   f"folder {verdict} (it teaches {left:.0%} of what the clean folder teaches "
                   f"above chance; > {bound:.0%} fails).")
        return self.judged(failed, summary, metric, at_most=self.at_most, details=details)


def groups_text(grouping: list[list[str]]) -> str:
    return " | ".join(", ".join(group) for group in grouping)


@register
class Unlearnability(Learnability):
    name = "protection.unlearnability"
    order = 10
    title = "Protected images do not teach the task"
    goal = ("train a fresh model on the protected copies and see whether it still learns the "
            "task (clean test accuracy against a model trained on the clean images)")
    labelling = "original labels"

    def extra_tables(self, data: ProtectionData) -> dict:
        surrogate = data.manifest.get("surrogate") or {}
        parameters = data.manifest.get("parameters", {})
        settings = {"method": data.manifest.get("method", "unknown (no protection.json)"),
                    "learner": self.config["learner"], "epochs": self.config["epochs"],
                    "image size": int(data.clean.images.shape[-1]), "epsilon": data.epsilon,
                    "groups": groups_text(data.grouping), "training images": len(data.clean),
                    "test images": len(data.test),
                    "surrogate": surrogate.get("path") or surrogate.get("kind", "unknown"),
                    "surrogate architecture": surrogate.get("model_type", "unknown"),
                    "clusters": parameters.get("clusters", "unknown"),
                    "manifest": "protection.json" if data.manifest
                    else "none (ε from --epsilon or 8/255)",
                    "data augmentation": "none"}
        return {"Settings": [{"setting": k, "value": v} for k, v in settings.items()]}

    def judge(self, clean_acc, protected_acc, chance, learner, details, data) -> Finding:
        finding = super().judge(clean_acc, protected_acc, chance, learner, details, data)
        note = (data.manifest.get("surrogate") or {}).get("note")
        if note:
            finding.summary += f" Surrogate: {note}"
        return finding


@register
class LabelAgnostic(Learnability):
    name = "protection.label_agnostic"
    order = 20
    title = "Protection holds under another labelling"
    goal = ("the same, with a coarser grouping of the classes: a protection must not depend "
            "on the labels an attacker chooses")
    labelling = "grouped labels"


def measure_perturbations(clean: ImageFolder, protected: ImageFolder) -> list[dict]:
    """L∞ and L2 of every protected image against its original, at full resolution."""
    rows = []
    for original, copy in zip(clean.files, protected.files):
        after = open_image(copy)
        before = np.asarray(open_image(original).convert(after.mode))
        after = np.asarray(after)
        relative = original.relative_to(clean.path).as_posix()
        if before.shape != after.shape:
            rows.append({"image": relative, "linf": 1.0, "l2": float("nan"),
                         "problem": f"size {after.shape} differs from the original's "
                                    f"{before.shape}"})
            continue
        linf, l2 = perturbation_size(before, after)
        rows.append({"image": relative, "linf": round(linf, 6), "l2": round(l2, 6)})
    return rows


def side_by_side(clean: ImageFolder, protected: ImageFolder, epsilon: float, artifacts,
                 clusters: dict[str, int]) -> list[str]:
    """Original | perturbation magnified (grey = 0, ±ε = black/white) | protected, for one
    image of each of the first clusters (or classes); the artifact paths."""
    chosen, seen = [], set()
    for index, file in enumerate(clean.files):
        relative = file.relative_to(clean.path).as_posix()
        group = clusters.get(relative, int(clean.labels[index]))
        if group not in seen:
            seen.add(group)
            chosen.append((index, group))
        if len(chosen) == EXAMPLES:
            break
    paths = []
    for index, group in chosen:
        after = open_image(protected.files[index])
        before = np.asarray(open_image(clean.files[index]).convert(after.mode)).astype(np.float32)
        after = np.asarray(after).astype(np.float32)
        if before.shape != after.shape:
            continue
        if before.ndim == 2:
            before, after = before[..., None].repeat(3, -1), after[..., None].repeat(3, -1)
        before, after = before[..., :3] / 255, after[..., :3] / 255
        change = np.clip(0.5 + (after - before) / (2 * epsilon), 0, 1)
        gap = np.ones((before.shape[0], max(2, before.shape[1] // 16), 3))
        strip = np.concatenate([before, gap, change, gap, after], axis=1)
        scale = max(1, 96 // strip.shape[0])
        strip = strip.repeat(scale, 0).repeat(scale, 1)
        name = f"artifacts/example-{len(paths) + 1}-{'cluster' if clusters else 'class'}{group}.png"
        save_png(strip, artifacts.parent / name)
        paths.append(name)
    return paths


@register
class PerturbationBudget(ProtectionProbe):
    name = "protection.perturbation_budget"
    order = 30
    title = "Every protected image stays within ε of its original"
    goal = "measure the L∞ and L2 change of every protected image against its original"
    remediation = ("Store protected images in a lossless format (PNG), or lower --epsilon so "
                   "that compression stays within the bound.")

    def run(self, target: Target, data: ProtectionData, ctx: ProbeContext) -> list[Finding]:
        sizes, epsilon = measure_perturbations(data.clean, data.protected), data.epsilon
        clusters = {e["input"]: e["cluster"] for e in data.manifest.get("images", [])
                    if isinstance(e, dict) and "input" in e and "cluster" in e}
        examples = (side_by_side(data.clean, data.protected, epsilon, ctx.artifacts_dir,
                                 clusters) if ctx.artifacts_dir is not None else [])
        worst = max(sizes, key=lambda row: row["linf"])
        outside = [row for row in sizes if not within_epsilon(row["linf"], epsilon)]
        l2 = [row["l2"] for row in sizes if np.isfinite(row["l2"])]
        metric = Metric(name="largest pixel change (of 255 levels)",
                        value=round(worst["linf"] * 255, 2), threshold=round(epsilon * 255, 2),
                        higher_is_worse=True, worst=255.0)
        details = {"images": len(sizes), "outside_epsilon": len(outside),
                   "histograms": {"series": {"L2 per image": l2}, "bins": 20,
                                  "title": "Size of the perturbations (L2, pixels in [0, 1])",
                                  "x_label": "L2"},
                   "examples": "original | perturbation (grey 0, white +ε, black −ε) | protected"}
        if not outside:
            summary = (f"All {len(sizes)} protected images are within ε = {epsilon:.4f} "
                       f"({epsilon * 255:.1f}/255) of their originals: largest L∞ "
                       f"{worst['linf']:.4f}, mean L2 {np.mean(l2):.3f}.")
            return [self.finding("pass", "info", summary, metric=metric, details=details,
                                 artifacts=examples, remediation="")]
        summary = (f"{len(outside)} of {len(sizes)} protected images change a pixel by more "
                   f"than ε = {epsilon:.4f} (worst: {worst['image']}, L∞ {worst['linf']:.4f}); "
                   "lossy formats (JPEG) add their compression error.")
        evidence = [Evidence(input=row["image"], output=row.get("problem", f"L∞ {row['linf']}"),
                             expected=f"L∞ ≤ {epsilon:.4f}", score=row["linf"])
                    for row in outside[:10]]
        return [self.failure(summary, metric, details=details, evidence=evidence,
                             artifacts=examples)]


class CounterMeasure(Learnability):
    """Learnability with the original labels when the attacker first applies a cheap
    counter-measure; the clean reference is trained the same way, so the comparison is fair."""

    labelling = "original labels"
    at_most = "high"
    severity_rule = ("a counter-measure undoing the protection is a known limit of small "
                     "perturbations (Image Shortcut Squeezing); at most high, since the plain "
                     "learner of protection.unlearnability is the primary test")
    remediation = ("Expect an attacker to apply this counter-measure: report what the "
                   "protection survives, and prefer a method (or a larger --epsilon) that "
                   "survives it when that matters.")


@register
class AugmentedTraining(CounterMeasure):
    name = "protection.augmented_training"
    order = 40
    title = "Protection holds against training with augmentation"
    goal = ("train the learner with standard augmentation (random crop after padding, "
            "horizontal flip) on each folder: augmentation breaks many shortcut patterns")
    defaults: ClassVar[dict[str, Any]] = {**Learnability.defaults,
                                          "padding": integer(4, low=1, high=64)}

    def condition(self) -> str:
        return ", trained with random crop + flip"

    def augmentation(self):
        from functools import partial

        from redteam.core.vision import random_crop_flip

        return partial(random_crop_flip, padding=int(self.config["padding"]))


@register
class JpegReencoding(CounterMeasure):
    name = "protection.jpeg_reencoding"
    order = 50
    title = "Protection survives JPEG re-encoding"
    goal = ("re-encode both folders as JPEG (quality 75 by default) before training: "
            "compression removes much of a small perturbation (Image Shortcut Squeezing, "
            "Liu et al., ICML 2023)")
    references = (UNLEARNABLE_CLUSTERS, UNLEARNABLE_EXAMPLES, "arXiv:2301.13838")
    defaults: ClassVar[dict[str, Any]] = {**Learnability.defaults,
                                          "quality": integer(75, low=1, high=95)}

    def condition(self) -> str:
        return f", both folders re-encoded as JPEG at quality {int(self.config['quality'])}"

    def training_sets(self, data: ProtectionData) -> dict[str, torch.Tensor]:
        from redteam.core.vision import jpeg_reencoded

        size, quality = tuple(data.clean.images.shape[-2:]), int(self.config["quality"])
        return {"trained on clean": jpeg_reencoded(data.clean.files, size, quality),
                "trained on protected": jpeg_reencoded(data.protected.files, size, quality)}
