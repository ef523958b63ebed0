"""``redteam evaluate-protection``: does a protected image folder resist being learnt?

What Unlearnable Clusters promise (Zhang et al., CVPR 2023) is measured the way the paper does:
train a fresh model, of another architecture than the surrogate, once on the clean images and
once on their protected copies, and compare both models' accuracy on clean test images. It is
done twice: with the original labels, and with a coarser grouping of the classes, since the
protection must not depend on the labels an attacker chooses. A third finding checks that every
protected image is within ε of its original. The run folder is the one ``redteam audit`` writes
(``findings.json``, ``report.html``, ``artifacts/``), so the report reads the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from redteam import __version__
from redteam.commands.protect import MANIFEST, parse_epsilon, perturbation_size, within_epsilon
from redteam.core.errors import InputError
from redteam.core.fileio import hash_tree
from redteam.core.findings import Evidence, Finding, Metric, RunRecord
from redteam.core.outputs import check_output_path, claim_output, seal_output
from redteam.core.untrusted import open_image, read_json_object
from redteam.core.vision import ImageFolder, load_image_folder, save_png
from redteam.engine import (
    AuditResult,
    default_out_dir,
    library_versions,
    now,
    seed_everything,
    write_run,
)

SUITE = "protection"
REFERENCES = ["arXiv:2301.01217"]
LEARNERS = ("convnext", "resnet", "vit")
MAX_LEARNABILITY = 0.5  # fail when the protected data still teaches half of what clean data does
EXAMPLES = 6


def parse_groups(text: str | None, classes: list[str]) -> list[list[str]]:
    """``"0,1,2;3,4"`` -> groups of class names; by default consecutive pairs of the sorted
    classes. Every class must be in exactly one group."""
    if not text:
        return [classes[i:i + 2] for i in range(0, len(classes), 2)]
    groups = [[name.strip() for name in part.split(",") if name.strip()]
              for part in text.split(";") if part.strip()]
    named = [name for group in groups for name in group]
    unknown = sorted(set(named) - set(classes))
    if unknown:
        raise InputError(f"--groups: {unknown[0]!r} is not a class of the clean folder "
                         f"({', '.join(classes)})")
    if sorted(named) != sorted(classes):
        missing = sorted(set(classes) - set(named)) or sorted({n for n in named
                                                               if named.count(n) > 1})
        raise InputError(f"--groups: every class must be in exactly one group ({missing[0]!r} "
                         "is not)")
    if len(groups) < 2:
        raise InputError("--groups: at least two groups are needed")
    return groups


def read_manifest(protected_dir: Path) -> dict:
    """``protection.json`` of a protected folder, checked field by field ({} when absent).

    The manifest comes with the folder, from whoever protected it: every value used here is
    checked for type and range, so a tampered one is bad input, not a crash mid-run.
    """
    path = protected_dir / MANIFEST
    if not path.is_file():
        return {}
    manifest = read_json_object(path, "protection manifest")
    parameters, surrogate = manifest.get("parameters"), manifest.get("surrogate", {})
    if not isinstance(parameters, dict):
        raise InputError(f"{path}: parameters: missing; not a redteam protection manifest")
    epsilon = parameters.get("epsilon", 8 / 255)
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0 < epsilon < 1:
        raise InputError(f"{path}: parameters.epsilon: expected a number between 0 and 1, got "
                         f"{epsilon!r}")
    size = parameters.get("working_size", [32])
    if (not isinstance(size, list) or not size or not all(
            isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 1024 for v in size)):
        raise InputError(f"{path}: parameters.working_size: expected a list of sizes in "
                         f"[8, 1024], got {size!r}")
    if not isinstance(surrogate, dict | None):
        raise InputError(f"{path}: surrogate: expected an object")
    for name in ("path", "kind", "model_type", "note"):
        if not isinstance((surrogate or {}).get(name, ""), str | None):
            raise InputError(f"{path}: surrogate.{name}: expected a string")
    if not isinstance(manifest.get("images", []), list):
        raise InputError(f"{path}: images: expected a list")
    return manifest


def _class_names(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise InputError(f"{folder}: needs at least two class sub-folders "
                         f"({folder}/<class>/<image>) to train and test a model")
    return names


def _paired(clean: ImageFolder, protected: ImageFolder) -> None:
    ours = {p.relative_to(clean.path).as_posix() for p in clean.files}
    theirs = {p.relative_to(protected.path).as_posix() for p in protected.files}
    if ours - theirs:
        raise InputError(f"{protected.path}: no protected copy of {sorted(ours - theirs)[0]}")
    if theirs - ours:
        raise InputError(f"{protected.path}: {sorted(theirs - ours)[0]} has no clean original "
                         f"in {clean.path}")


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


def _train_and_test(learner: str, images: torch.Tensor, labels: torch.Tensor,
                    test: torch.Tensor, test_labels: torch.Tensor, num_labels: int, epochs: int,
                    seed: int, device: str, quiet: bool) -> float:
    from redteam.core.classifiers import small_classifier
    from redteam.core.training import train_classifier
    from redteam.core.vision import PixelClassifier

    hf_model, processor = small_classifier(learner, int(images.shape[-1]), num_labels, seed)
    model = train_classifier(PixelClassifier(hf_model, processor).to(device), images, labels,
                             epochs=epochs, seed=seed, quiet=quiet)
    with torch.inference_mode():
        predictions = torch.cat([model(test[s:s + 256].to(device)).argmax(-1).cpu()
                                 for s in range(0, len(test), 256)])
    return float((predictions == test_labels).float().mean())


def _learnability_finding(probe: str, title: str, labelling: str, clean_acc: float,
                          protected_acc: float, chance: float, learner: str,
                          extra: dict) -> Finding:
    """Judge one labelling: the share of what clean data teaches (above chance) that the
    protected data still teaches."""
    reach = clean_acc - chance
    if reach < 0.05:
        return Finding(probe=probe, suite=SUITE, title=title, status="error", severity="medium",
                       summary=f"Trained on the clean images, the {learner} scores {clean_acc:.2f}"
                               f" with {labelling} (chance {chance:.2f}): it did not learn the "
                               "task, so the protection cannot be judged. Raise --epochs or use "
                               "more images.", references=REFERENCES, details=extra)
    left = max(0.0, (protected_acc - chance) / reach)
    failed = left > MAX_LEARNABILITY
    verdict = ("still teaches a model most of the task: the protection is weak" if failed else
               "is close to useless for training: the protection holds")
    return Finding(
        probe=probe, suite=SUITE, title=title, status="fail" if failed else "pass",
        severity="high" if failed else "info",
        metric=Metric(name="learnability left", value=round(left, 4),
                      threshold=MAX_LEARNABILITY, higher_is_worse=True,
                      baselines={"trained on clean": round(clean_acc, 4),
                                 "trained on protected": round(protected_acc, 4),
                                 "chance": round(chance, 4)}),
        summary=f"With {labelling}, a {learner} trained on the clean images scores "
                f"{clean_acc:.2f} on the clean test images; trained on the protected copies, "
                f"{protected_acc:.2f} (chance {chance:.2f}). The protected folder {verdict} "
                f"(it teaches {left:.0%} of what the clean folder teaches above chance; "
                f"> {MAX_LEARNABILITY:.0%} fails).",
        details=extra, references=REFERENCES,
        remediation=("Protect with a surrogate closer to the data an attacker would train on "
                     "(--surrogate), or a larger --epsilon if a visible change is acceptable."
                     if failed else ""))


def _examples(clean: ImageFolder, protected: ImageFolder, epsilon: float, artifacts: Path,
              clusters: dict[str, int]) -> list[str]:
    """Side by side: original | perturbation magnified (grey = 0, ±ε = black/white) | protected,
    for one image of each of the first clusters (or classes)."""
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


def evaluate_protection(clean_dir: Path, protected_dir: Path, test_dir: Path, *,
                        out: Path | None = None, learner: str | None = None,
                        groups: str | None = None, epochs: int = 15,
                        image_size: int | None = None, epsilon: str | None = None,
                        seed: int = 0, device: str = "auto", fail_on: str = "high",
                        overwrite: bool = False, quiet: bool = False,
                        command: list[str] | None = None) -> AuditResult:
    """Train on ``clean_dir`` and on ``protected_dir`` (same images, protected), test on
    ``test_dir``, with the original labels and with ``groups``; write the run folder."""
    from redteam.targets import resolve_device

    clean_dir, protected_dir, test_dir = Path(clean_dir), Path(protected_dir), Path(test_dir)
    for folder in (clean_dir, protected_dir, test_dir):
        if not folder.is_dir():
            raise InputError(f"{folder}: image folder not found")
    manifest = read_manifest(protected_dir)
    parameters = manifest.get("parameters", {})
    eps = parse_epsilon(epsilon) if epsilon else float(parameters.get("epsilon", 8 / 255))
    surrogate = manifest.get("surrogate") or {}
    learner = learner or next(a for a in LEARNERS if a != surrogate.get("model_type"))
    if learner not in LEARNERS:
        raise InputError(f"--learner {learner}: unknown (choose from {', '.join(LEARNERS)})")
    size = image_size or int((parameters.get("working_size") or [32])[0])
    classes = _class_names(clean_dir)
    grouping = parse_groups(groups, classes)
    out = out or default_out_dir(protected_dir)
    check_output_path(out, {"clean folder": clean_dir, "protected folder": protected_dir,
                            "test data": test_dir}, overwrite=overwrite)
    device = resolve_device(device)

    index = {name: i for i, name in enumerate(classes)}
    clean = load_image_folder(clean_dir, (size, size), index)
    protected = load_image_folder(protected_dir, (size, size), index)
    test = load_image_folder(test_dir, (size, size), index)
    _paired(clean, protected)
    claim_output(out, "protection evaluation")
    try:
        (out / "artifacts").mkdir(exist_ok=True)
        started = now()

        sizes = measure_perturbations(clean, protected)
        coarse = torch.tensor([next(g for g, group in enumerate(grouping) if name in group)
                               for name in classes])
        labellings = {"original labels": (clean.labels, test.labels, len(classes)),
                      "grouped labels": (coarse[clean.labels], coarse[test.labels], len(grouping))}
        accuracy: dict[str, dict[str, float]] = {}
        for labelling, (train_labels, test_labels, count) in labellings.items():
            accuracy[labelling] = {}
            for name, data in (("trained on clean", clean), ("trained on protected", protected)):
                seed_everything(seed)
                accuracy[labelling][name] = _train_and_test(
                    learner, data.images, train_labels, test.images, test_labels, count, epochs,
                    seed, device, quiet)
            majority = torch.bincount(test_labels, minlength=count).max().item() / len(test_labels)
            accuracy[labelling]["chance (majority class)"] = majority

        settings = {"learner": learner, "epochs": epochs, "image size": size, "epsilon": eps,
                    "groups": " | ".join(", ".join(g) for g in grouping),
                    "training images": len(clean), "test images": len(test),
                    "surrogate": surrogate.get("path") or surrogate.get("kind", "unknown"),
                    "surrogate architecture": surrogate.get("model_type", "unknown"),
                    "clusters": parameters.get("clusters", "unknown"),
                    "manifest": MANIFEST if manifest else "none (ε from --epsilon or 8/255)",
                    "data augmentation": "none"}
        rows = {labelling: {"labelling": labelling, **{k: round(v, 4) for k, v in row.items()}}
                for labelling, row in accuracy.items()}
        settings_rows = [{"setting": k, "value": v} for k, v in settings.items()]
        overview = {"tables": {"Test accuracy on clean test images": list(rows.values()),
                               "Settings": settings_rows},
                    "split_scores": {k: {n: v for n, v in row.items()
                                         if not n.startswith("chance")}
                                     for k, row in accuracy.items()},
                    "chart_title": f"Clean test accuracy of a {learner} trained on each folder",
                    "chart_y_label": "test accuracy"}
        findings = []
        for probe, title, labelling, details in (
                ("protection.unlearnability", "Protected images do not teach the task",
                 "original labels", overview),
                ("protection.label_agnostic", "Protection holds under another labelling",
                 "grouped labels", {"tables": {"Test accuracy on clean test images":
                                               [rows["grouped labels"]]},
                                    "groups": settings["groups"]})):
            row = accuracy[labelling]
            findings.append(_learnability_finding(
                probe, title, labelling, row["trained on clean"], row["trained on protected"],
                row["chance (majority class)"], learner, details))
        if surrogate.get("note"):
            findings[0].summary += f" Surrogate: {surrogate['note']}"
        clusters = {e["input"]: e["cluster"] for e in manifest.get("images", [])
                    if isinstance(e, dict) and "input" in e and "cluster" in e}
        examples = _examples(clean, protected, eps, out / "artifacts", clusters)
        findings.append(_budget_finding(sizes, eps, examples))

        run = RunRecord(
            tool_version=__version__, command=command or ["redteam", *sys.argv[1:]], suite=SUITE,
            target={"path": str(protected_dir), "name": protected_dir.name, "kind": "image-folder",
                    "files": hash_tree(protected_dir)},
            config=settings, seed=seed, fail_on=fail_on, device=device,
            libraries=library_versions(), started=started,
            inputs={"clean": hash_tree(clean_dir), "test": hash_tree(test_dir)})
        return AuditResult(exit_code=write_run(out, run, findings), out_dir=out, findings=findings)
    finally:
        seal_output(out)


def _budget_finding(sizes: list[dict], epsilon: float, examples: list[str]) -> Finding:
    worst = max(sizes, key=lambda row: row["linf"])
    outside = [row for row in sizes if not within_epsilon(row["linf"], epsilon)]
    l2 = [row["l2"] for row in sizes if np.isfinite(row["l2"])]
    failed = bool(outside)
    return Finding(
        probe="protection.perturbation_budget", suite=SUITE,
        title="Every protected image stays within ε of its original",
        status="fail" if failed else "pass", severity="medium" if failed else "info",
        metric=Metric(name="largest pixel change (of 255 levels)",
                      value=round(worst["linf"] * 255, 2), threshold=round(epsilon * 255, 2),
                      higher_is_worse=True),
        summary=(f"{len(outside)} of {len(sizes)} protected images change a pixel by more than "
                 f"ε = {epsilon:.4f} (worst: {worst['image']}, L∞ {worst['linf']:.4f}); lossy "
                 "formats (JPEG) add their compression error." if failed else
                 f"All {len(sizes)} protected images are within ε = {epsilon:.4f} "
                 f"({epsilon * 255:.1f}/255) of their originals: largest L∞ {worst['linf']:.4f}, "
                 f"mean L2 {np.mean(l2):.3f}."),
        evidence=[Evidence(input=row["image"], output=row.get("problem", f"L∞ {row['linf']}"),
                           expected=f"L∞ ≤ {epsilon:.4f}", score=row["linf"])
                  for row in outside[:10]],
        details={"images": len(sizes), "outside_epsilon": len(outside),
                 "histograms": {"series": {"L2 per image": l2}, "bins": 20,
                                "title": "Size of the perturbations (L2, pixels in [0, 1])",
                                "x_label": "L2"},
                 "examples": "original | perturbation (grey 0, white +ε, black −ε) | protected"},
        artifacts=examples, references=REFERENCES,
        remediation=("Store protected images in a lossless format (PNG), or lower --epsilon so "
                     "that compression stays within the bound." if failed else ""))
