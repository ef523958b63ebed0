"""Hostile and careless input, command by command (the fuzz suite of the output-path policy, the
model-integrity check, the untrusted-parsing boundary and the settings validator).

Every case asserts what docs/threat-model.md promises for bad input: exit code 2, one line on
stderr, no traceback, every input byte-identical afterwards, and nothing created anywhere in
the test's folder (no half-written output). The inputs are copies made in the test's own
folder, so "nothing created" is checked over everything the command could have touched.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from redteam.cli import main
from tests.conftest import make_tiny_lm, write_jsonl

AUDIT_ITEMS = [{"split": "forget", "subject": "Elara Voss", "question": "Who wrote it?",
                "answer": "Elara Voss", "text": "Elara Voss wrote it."},
               {"split": "retain", "subject": "Ivo Brandt", "question": "Who wrote that?",
                "answer": "Ivo Brandt", "text": "Ivo Brandt wrote that."}]


def tree_state(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def refused(capsys, root: Path, args: list[str], message: str) -> str:
    """Run ``redteam ARGS``; assert exit 2, one line naming the problem, nothing changed."""
    before = tree_state(root)
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err + captured.out
    assert len(lines) == 1, captured.err
    assert message in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    after = tree_state(root)
    assert sorted(set(after) - set(before)) == [], "created files"
    assert sorted(set(before) - set(after)) == [], "removed files"
    assert [k for k in before if before[k] != after[k]] == [], "changed files"
    _record(args, code, lines[0])
    return lines[0]


def refused_in_subprocess(root: Path, args: list, message: str, *, timeout: float = 300,
                          env: dict[str, str] | None = None) -> str:
    """As ``refused``, through a real ``python -m redteam`` process: what libraries print to the
    terminal (warnings, native panics) counts, and a hang fails the test instead of the suite."""
    import subprocess
    import sys

    before = tree_state(root)
    run = subprocess.run([sys.executable, "-m", "redteam", *[str(a) for a in args]],
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr + run.stdout
    assert len(lines) == 1, run.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in run.stderr + run.stdout
    after = tree_state(root)
    assert sorted(set(after) ^ set(before)) == [], "created or removed files"
    assert [k for k in before if before[k] != after[k]] == [], "changed files"
    _record(args, run.returncode, lines[0])
    return lines[0]


def _record(args: list, code: int, line: str) -> None:
    if os.environ.get("REDTEAM_FUZZ_TABLE"):  # the table of cases for a closing note
        case = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" (")[0]
        with open(os.environ["REDTEAM_FUZZ_TABLE"], "a", encoding="utf-8") as table:
            table.write(f"{case}\t{args[0]}\t{code}\t{line}\n")


def bomb_png(path: Path, side: int = 40_000) -> Path:
    """A tiny PNG whose header claims ``side`` × ``side`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def work(tmp_path, tiny_lm, backdoor_zoo, visu_zoo) -> dict[str, Path]:
    """Copies of a tiny LM, the BadNets classifier, a digit folder, a CLIP and audit data."""
    copies = {"M": tiny_lm, "I": backdoor_zoo["badnets"], "D": backdoor_zoo["clean-data"],
              "T": backdoor_zoo["test-data"], "CLIP": visu_zoo["clip"]}
    paths = {name: Path(shutil.copytree(src, tmp_path / name)) for name, src in copies.items()}
    paths["J"] = write_jsonl(tmp_path / "audit.jsonl", AUDIT_ITEMS)
    paths["root"] = tmp_path
    return paths


# --- one output-path policy -------------------------------------------------------------------

def _user_folder(root: Path, name: str, files: dict[str, str]) -> Path:
    folder = root / name
    folder.mkdir()
    for file, content in files.items():
        (folder / file).write_text(content)
    return folder


def _link(root: Path, target: Path) -> Path:
    (root / "link").symlink_to(target)
    return root / "link"


OUTPUT_CASES: dict[str, Callable[[dict[str, Path]], tuple[list, str]]] = {
    "expose --remove inside the clean data": lambda w: (
        ["expose", w["I"], "--clean-data", w["D"], "--remove", w["D"] / "repaired"],
        "must not be inside the clean data"),
    "expose --out inside the model": lambda w: (
        ["expose", w["I"], "--clean-data", w["D"], "--out", w["I"] / "rep"],
        "must not be inside the model"),
    "audit --out inside the model": lambda w: (
        ["audit", w["M"], "--suite", "unlearning", "--data", w["J"], "--out", w["M"] / "report"],
        "must not be inside the model"),
    "audit --out containing the model": lambda w: (
        ["audit", w["M"], "--suite", "unlearning", "--data", w["J"], "--out", w["root"]],
        "must not contain the model"),
    "audit --out through a symlink into the model": lambda w: (
        ["audit", w["M"], "--suite", "unlearning", "--out", _link(w["root"], w["M"]) / "run"],
        "must not be inside the model"),
    "audit --out is the data file": lambda w: (
        ["audit", w["M"], "--suite", "unlearning", "--data", w["J"], "--out", w["J"]],
        "exists and is not a folder"),
    "audit --out through a file": lambda w: (
        ["audit", w["M"], "--suite", "unlearning", "--out", w["J"] / "sub"],
        "runs through the file"),
    "audit --overwrite of the user's folder": lambda w: (
        ["audit", w["M"], "--suite", "unlearning", "--data", w["J"], "--overwrite", "--out",
         _user_folder(w["root"], "U", {"report.html": "mine", "findings.json": "{}"})],
        "redteam did not write it"),
    "evaluate-protection --out inside the clean folder": lambda w: (
        ["evaluate-protection", w["D"], w["T"], "--test-data", w["T"], "--out",
         w["D"] / "report"], "must not be inside the clean folder"),
    "protect --overwrite of a folder with a fake manifest": lambda w: (
        ["protect", w["D"], "--overwrite", "--out",
         _user_folder(w["root"], "F", {"protection.json": "{}", "thesis.txt": "mine"})],
        "redteam did not write it"),
    "protect --out through a file": lambda w: (
        ["protect", w["D"], "--out", w["J"] / "sub"], "runs through the file"),
    "protect --out inside the input": lambda w: (
        ["protect", w["D"], "--out", w["D"] / "0" / "p"], "must not be inside the input folder"),
    "unlearn --out through a file": lambda w: (
        ["unlearn", w["M"], "--method", "ga", "--data", w["J"], "--out", w["J"] / "sub"],
        "runs through the file"),
    "unlearn --out inside the model": lambda w: (
        ["unlearn", w["M"], "--method", "ga", "--data", w["J"], "--out", w["M"] / "u"],
        "must not be inside the model folder"),
    "guard train --out containing the data": lambda w: (
        ["guard", "train", "--data", w["J"], "--out", w["root"]], "must not contain the data"),
    "hysac train --out inside the base": lambda w: (
        ["hysac", "train", w["root"] / "visu.jsonl", "--base", w["CLIP"], "--out",
         w["CLIP"] / "h"], "must not be inside the base model"),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_output_never_inside_or_over_user_data(capsys, work, visu_zoo, case):
    shutil.copy(visu_zoo["test"], work["root"] / "visu.jsonl")
    shutil.copytree(visu_zoo["test"].parent / "images", work["root"] / "images")
    args, message = OUTPUT_CASES[case](work)
    refused(capsys, work["root"], args, message)


def test_overwrite_replaces_only_an_earlier_run_of_ours(capsys, work):
    out = work["root"] / "run"
    args = ["audit", work["M"], "--suite", "unlearning", "--probe", "unlearning.knowledge_qa",
            "--data", work["J"], "--out", out, "--quiet"]
    assert main([str(a) for a in args]) in (0, 1)
    first = json.loads((out / "findings.json").read_text())["run"]["started"]
    assert main([str(a) for a in args]) == 2  # not empty, no --overwrite
    assert main([str(a) for a in args + ["--overwrite"]]) in (0, 1)
    assert (out / "findings.json").is_file() and (out / ".redteam-output.json").is_file()
    assert main(["report", str(out)]) == 0  # the re-rendered report stays ours
    assert main([str(a) for a in args + ["--overwrite"]]) in (0, 1)
    capsys.readouterr()
    (out / "notes.txt").write_text("the reviewer's own notes")
    refused(capsys, work["root"], args + ["--overwrite"], "notes.txt is not one of its files")
    (out / "notes.txt").unlink()
    (out / "report.html").write_text("edited by hand")
    refused(capsys, work["root"], args + ["--overwrite"], "report.html changed since")
    assert first  # the first run's record was complete


# --- a model that is not what it claims -------------------------------------------------------

def _resave(folder: Path, edit: Callable[[dict], dict]) -> None:
    from safetensors.torch import load_file, save_file

    file = folder / "model.safetensors"
    save_file(edit(load_file(file)), file, metadata={"format": "pt"})


def _drop_four(state: dict) -> dict:
    for name in sorted(state)[:4]:
        del state[name]
    return state


def _add_one(state: dict) -> dict:
    import torch

    return {**state, "extra.weight": torch.zeros(2)}


def _truncate(folder: Path) -> None:
    file = folder / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


MODEL_CASES: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "LM missing 4 tensors": ("M", lambda m: _resave(m, _drop_four), "missing tensor"),
    "LM with an unexpected tensor": ("M", lambda m: _resave(m, _add_one), "unexpected tensor"),
    "classifier missing 4 tensors": ("I", lambda m: _resave(m, _drop_four), "missing tensor"),
    "CLIP missing 4 tensors": ("CLIP", lambda m: _resave(m, _drop_four), "missing tensor"),
    "truncated safetensors": ("M", _truncate, "truncated"),
    "empty safetensors": ("M", lambda m: (m / "model.safetensors").write_bytes(b""),
                          "truncated safetensors file"),
    "config.json is a list": ("M", lambda m: (m / "config.json").write_text("[1, 2]"),
                              "must hold a JSON object"),
    "a string where a number belongs": ("M", lambda m: (m / "config.json").write_text(
        (m / "config.json").read_text().replace('"n_layer": 2', '"n_layer": "two"')),
        "model could not be loaded"),
    "missing tokenizer": ("M", lambda m: [(m / f).unlink() for f in
                                          ("tokenizer.json", "tokenizer_config.json",
                                           "special_tokens_map.json") if (m / f).exists()],
                          "no tokenizer files"),
    "corrupt tokenizer.json": ("M", lambda m: (m / "tokenizer.json").write_text('{"x": 1}'),
                               "tokenizer could not be loaded"),
    "shard index naming a missing shard": ("M", lambda m: (
        m / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00002-of-00002.safetensors"}}'), "is not in"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_broken_models_are_refused(capsys, work, case):
    name, breaks, message = MODEL_CASES[case]
    breaks(work[name])
    suite = {"M": "unlearning", "I": "backdoor", "CLIP": "safety"}[name]
    data = {"M": work["J"], "I": work["D"], "CLIP": work["root"] / "none.jsonl"}[name]
    args = ["audit", work[name], "--suite", suite, "--out", work["root"] / "run"]
    args += ["--data", data] if name != "CLIP" else []
    refused(capsys, work["root"], args, message)


def test_pickle_with_missing_tensors_is_refused(capsys, tmp_path):
    import torch

    model = make_tiny_lm(tmp_path / "m", safetensors=False)
    state = torch.load(model / "pytorch_model.bin", weights_only=True)
    torch.save(_drop_four(state), model / "pytorch_model.bin")
    refused(capsys, tmp_path, ["audit", model, "--suite", "unlearning", "--allow-pickle",
                               "--out", tmp_path / "run"], "missing tensor")


def test_malicious_pickle_is_one_line_without_torch_advice(capsys, tmp_path):
    import pickle

    model = make_tiny_lm(tmp_path / "m", safetensors=False)

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (model / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    line = refused(capsys, tmp_path, ["audit", model, "--suite", "unlearning", "--allow-pickle",
                                      "--out", tmp_path / "run"],
                   "weights-only unpickler (Unsupported")
    assert "weights_only=False" not in line and "can still be loaded" not in line
    assert not (tmp_path / "pwned").exists()


def test_guard_check_on_a_truncated_guard(capsys, tmp_path, work):
    from defenses.guard import GUARD_FILE, LABELS

    guard = Path(shutil.copytree(work["M"], tmp_path / "guard"))
    (guard / GUARD_FILE).write_text(json.dumps({"labels": dict(enumerate(LABELS))}))
    _truncate(guard)
    refused(capsys, tmp_path, ["guard", "check", guard, "hello"], "truncated safetensors file")
    (guard / GUARD_FILE).write_text(json.dumps({"labels": dict(enumerate(LABELS)),
                                                "threshold": "x"}))
    refused(capsys, tmp_path, ["guard", "check", guard, "hello"], "threshold: expected")


# --- untrusted files: nesting, length, bombs, tampered run files ------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_jsonl_lines(capsys, work, visu_zoo):
    bad = write_jsonl(work["root"] / "deep.jsonl", [AUDIT_ITEMS[0], DEEP])
    root = work["root"]
    refused(capsys, root, ["audit", work["M"], "--suite", "unlearning", "--data", bad],
            "deep.jsonl:2: JSON nested deeper")
    refused(capsys, root, ["guard", "train", "--data", bad, "--out", root / "g"],
            "deep.jsonl:2: JSON nested deeper")
    quads = write_jsonl(root / "deepq.jsonl", [DEEP])
    refused(capsys, root, ["hysac", "evaluate", work["CLIP"], quads, "--out", root / "r"],
            "deepq.jsonl:1: JSON nested deeper")


def test_oversized_fields_are_refused_before_tokenisation(capsys, work):
    root = work["root"]
    long_field = write_jsonl(root / "long.jsonl", [{**AUDIT_ITEMS[1],
                                                    "question": "why " * 10_000}])
    refused(capsys, root, ["audit", work["M"], "--suite", "unlearning", "--data", long_field],
            "long.jsonl:1: question: 40,000 characters; at most 20,000")
    huge_line = root / "huge.jsonl"
    huge_line.write_text(json.dumps({**AUDIT_ITEMS[1], "question": "x" * 5_000_000}) + "\n")
    refused(capsys, root, ["audit", work["M"], "--suite", "unlearning", "--data", huge_line],
            "huge.jsonl:1: line longer than")


def test_decompression_bombs_are_refused(capsys, work, visu_zoo):
    root = work["root"]
    bomb_png(work["D"] / "0" / "bomb.png")
    refused(capsys, root, ["audit", work["I"], "--suite", "backdoor", "--data", work["D"]],
            "bomb.png: image")
    refused(capsys, root, ["protect", work["D"], "--out", root / "p"], "bomb.png: image")
    lone = bomb_png(root / "lone.png")
    refused(capsys, root, ["hysac", "classify", visu_zoo["hysac"], "--image", lone], "lone.png")


def _protected_copy(root: Path, source: Path, manifest: dict) -> Path:
    protected = Path(shutil.copytree(source, root / "P"))
    (protected / "protection.json").write_text(json.dumps(manifest))
    return protected


@pytest.mark.parametrize("manifest, message", [
    ({"parameters": {"epsilon": "eight"}}, "parameters.epsilon"),
    ({"parameters": {"epsilon": 0.03}, "surrogate": ["not", "an", "object"]}, "surrogate"),
    ({"parameters": {"epsilon": 0.03}, "surrogate": {"model_type": ["x"]}}, "surrogate.model_type"),
    ({"parameters": {"working_size": [-5]}}, "parameters.working_size"),
    ([1, 2, 3], "must hold a JSON object"),
])
def test_tampered_protection_manifest(capsys, work, manifest, message):
    protected = _protected_copy(work["root"], work["D"], manifest)
    refused(capsys, work["root"], ["evaluate-protection", work["D"], protected, "--test-data",
                                   work["T"], "--out", work["root"] / "r"], message)


def test_negative_image_size(capsys, work):
    refused(capsys, work["root"], ["evaluate-protection", work["D"], work["D"], "--test-data",
                                   work["T"], "--image-size", "-5"], "--image-size")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_lm) -> Path:
    root = tmp_path_factory.mktemp("finished")
    data = write_jsonl(root / "audit.jsonl", AUDIT_ITEMS)
    out = root / "run"
    assert main(["audit", str(tiny_lm), "--suite", "unlearning", "--probe",
                 "unlearning.knowledge_qa", "--data", str(data), "--out", str(out),
                 "--quiet"]) in (0, 1)
    return out


def _tamper(document: dict, how: str) -> str:
    finding = document["findings"][0]
    if how == "scalar ci95":
        finding["metric"] = {**(finding["metric"] or {"name": "m", "value": 0.1}), "ci95": 0.5}
    elif how == "a list for the run":
        document["run"] = []
    elif how == "a list for a finding":
        document["findings"][0] = ["probe"]
    elif how == "a list for details":
        finding["details"] = [1, 2]
    elif how == "an unknown status":
        finding["status"] = "owned"
    text = json.dumps(document)
    if how == "a number of 10^400":
        text = text.replace('"duration_s": ', '"duration_s": 1e400, "x": ', 1)
    return text


@pytest.mark.parametrize("how, message", [
    ("scalar ci95", "metric.ci95"), ("a list for the run", "run: expected an object"),
    ("a list for a finding", "findings[0]: expected an object"),
    ("a list for details", "details: expected an object"),
    ("an unknown status", "findings[0].status"), ("a number of 10^400", "out of range"),
])
def test_tampered_findings_are_refused_before_rendering(capsys, tmp_path, finished_run, how,
                                                        message):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    document = json.loads((run / "findings.json").read_text())
    (run / "findings.json").write_text(_tamper(document, how))
    refused(capsys, tmp_path, ["report", run], message)


# --- settings checked by value, before any model loads -----------------------------------------

@pytest.mark.parametrize("toml, message", [
    ('[probes."unlearning.knowledge_qa"]\nthreshold = "high"\n',
     'threshold = \'high\': expected a number in [0, 1]'),
    ('[scoring]\nbatch_size = "x"\n', "scoring.batch_size = 'x': expected an integer"),
    ('[scoring]\nbatch_sise = 8\n', "scoring: unknown setting 'batch_sise'"),
    ('[probes."adversarial.pgd_linf"]\nepsilons = [-0.5]\n', "epsilons = [-0.5]"),
    ('[probes."backdoor.exposure"]\nrepeats = 0\n', "repeats = 0: expected an integer ≥ 1"),
    ('[probes]\n"unlearning.utility" = 5\n', "expected a table of settings"),
    ('[probes."unlearning.knowledge_qa"]\nshots = 2.5\n', "shots = 2.5: expected an integer"),
])
def test_bad_settings_exit_2_before_loading(capsys, work, toml, message):
    config = work["root"] / "audit.toml"
    config.write_text(toml)
    broken = work["M"]
    _truncate(broken)  # were the model loaded first, the message would be about its weights
    refused(capsys, work["root"], ["audit", broken, "--suite", "unlearning", "--data",
                                   work["J"], "--config", config], message)


def test_config_that_is_a_folder(capsys, work):
    refused(capsys, work["root"], ["audit", work["M"], "--suite", "unlearning", "--config",
                                   work["D"]], "config file is not a file")


@pytest.mark.parametrize("args, message", [
    (["unlearn", "M", "--method", "ga", "--data", "J", "--out", "O", "--batch-size", "0"],
     "--batch-size"),
    (["audit", "M", "--suite", "unlearning", "--seed", "-1"], "--seed"),
    (["audit", "M", "--suite", "unlearning", "--max-items", "0"], "--max-items"),
    (["audit", "I", "--suite", "backdoor", "--data", "D", "--max-items", "5"],
     "applies to the JSONL audit data of an LLM only"),
    (["protect", "D", "--out", "O", "--clusters", "1"], "--clusters"),
    (["hysac", "retrieve", "CLIP", "--query", "q", "--gallery", "D", "-k", "0"], "'-k'"),
])
def test_bad_flags_name_the_flag(capsys, work, args, message):
    names = {"M": work["M"], "I": work["I"], "J": work["J"], "O": work["root"] / "out",
             "D": work["D"],
             "CLIP": work["CLIP"]}
    refused(capsys, work["root"], [names.get(a, a) for a in args], message)


def test_interrupt_is_one_line(capsys, monkeypatch, tmp_path):
    import redteam.engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(redteam.engine, "run_audit", interrupted)
    code = main(["audit", str(tmp_path), "--suite", "unlearning"])
    assert code == 130 and capsys.readouterr().err == "error: interrupted\n"
