"""``redteam evaluate-protection``: does a protected image folder resist being learnt?

The boundary of the measurement: the three folders, the manifest that came with the protected
one, the grouping and the settings are checked before anything trains (bad input: one line,
exit 2, nothing written); then the ``protection`` suite (``redteam.probes.protection``) runs
through the engine, which writes the run folder ``redteam audit`` writes (``findings.json``,
``report.html``, ``events.jsonl``, ``artifacts/``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from redteam.commands.protect import MANIFEST, parse_epsilon
from redteam.core.errors import InputError
from redteam.core.fileio import hash_tree
from redteam.core.outputs import check_output_path
from redteam.core.untrusted import read_json_object
from redteam.core.vision import (
    ImageFolder,
    check_one_8bit_picture,
    list_image_files,
    load_image_folder,
)
from redteam.engine import (
    DEFAULT_FORMATS,
    AuditResult,
    ModelCache,
    build_probes,
    default_out_dir,
    run_prepared,
)
from redteam.probes.protection import LEARNERS, ProtectionData
from redteam.targets import Target

SUITE = "protection"
LEARNABILITY_PROBES = ("protection.unlearnability", "protection.label_agnostic",
                       "protection.augmented_training", "protection.jpeg_reencoding")


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


def check_pictures(folders: tuple[Path, ...]) -> None:
    """Refuse, from the headers and before anything trains, an image of the class folders that
    cannot be read as one 8-bit picture (16-bit, multipage, animated): reading it would compare
    clipped or first-page pixels and report on images that are not the user's."""
    for folder in folders:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for file in list_image_files(sub):
                check_one_8bit_picture(file)


@dataclass(frozen=True, kw_only=True)
class ProtectionEvaluationRequest:
    """Everything ``redteam evaluate-protection`` was asked to do (plain data; the CLI fills
    it)."""

    clean_dir: Path  # the images before protection, one sub-folder per class
    protected_dir: Path  # the same images protected (with its protection.json, if any)
    test_dir: Path  # clean test images, one sub-folder per class
    out: Path | None = None  # the run folder; None: next to the protected folder
    learner: str | None = None  # of probes.protection.LEARNERS; None: one unlike the surrogate
    groups: str | None = None  # "0,1,2;3,4" (parse_groups); None: consecutive pairs
    epochs: int = 15  # of the learner, on each folder
    image_size: int | None = None  # the training resolution; None: the manifest's
    epsilon: str | None = None  # "8/255" or "0.031"; None: the manifest's, else 8/255
    seed: int = 0
    device: str = "auto"
    fail_on: str = "high"
    overwrite: bool = False
    quiet: bool = False
    command: list[str] | None = None  # recorded in the run; None: this process's arguments
    formats: tuple[str, ...] = DEFAULT_FORMATS  # reports.machine.FORMATS


def evaluate_protection(request: ProtectionEvaluationRequest, *,
                        cache: ModelCache | None = None) -> AuditResult:
    """Train on the clean folder and on the protected one (same images, protected), test on
    the test folder, with the original labels and with the coarser groups; write the run
    folder.

    ``cache`` shares work between runs of one process (``engine.ModelCache``): two protections
    of the same clean folder train the learner on it once per probe.
    """
    from redteam.targets import resolve_device

    clean_dir, protected_dir, test_dir = (Path(request.clean_dir), Path(request.protected_dir),
                                          Path(request.test_dir))
    for folder in (clean_dir, protected_dir, test_dir):
        if not folder.is_dir():
            raise InputError(f"{folder}: image folder not found")
    manifest = read_manifest(protected_dir)
    parameters = manifest.get("parameters", {})
    eps = (parse_epsilon(request.epsilon) if request.epsilon
           else float(parameters.get("epsilon", 8 / 255)))
    surrogate = manifest.get("surrogate") or {}
    learner = request.learner or next(a for a in LEARNERS if a != surrogate.get("model_type"))
    if learner not in LEARNERS:
        raise InputError(f"--learner {learner}: unknown (choose from {', '.join(LEARNERS)})")
    settings = {name: {"learner": learner, "epochs": request.epochs}
                for name in LEARNABILITY_PROBES}
    probes = build_probes(SUITE, settings, "evaluate-protection")
    size = request.image_size or int((parameters.get("working_size") or [32])[0])
    classes = _class_names(clean_dir)
    grouping = parse_groups(request.groups, classes)
    out = request.out or default_out_dir(protected_dir)
    check_output_path(out, {"clean folder": clean_dir, "protected folder": protected_dir,
                            "test data": test_dir}, overwrite=request.overwrite)
    check_pictures((clean_dir, protected_dir, test_dir))
    device = resolve_device(request.device)
    index = {name: i for i, name in enumerate(classes)}
    clean, protected, test = (load_image_folder(folder, (size, size), index)
                              for folder in (clean_dir, protected_dir, test_dir))
    _paired(clean, protected)
    data = ProtectionData(clean, protected, test, classes, grouping, eps, manifest)
    target = Target(path=protected_dir, kind="image-folder", model=None, device=device,
                    files=hash_tree(protected_dir))
    return run_prepared(probes, target, data, out=out, what="protection evaluation",
                        seed=request.seed, device=device, fail_on=request.fail_on,
                        quiet=request.quiet,
                        command=request.command or ["redteam", *sys.argv[1:]],
                        config={"probes": settings, "image_size": size, "epsilon": eps,
                                "groups": request.groups or "pairs"},
                        inputs={"clean": hash_tree(clean_dir), "test": hash_tree(test_dir)},
                        formats=request.formats, cache=cache)
