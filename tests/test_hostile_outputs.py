"""Hostile outputs: what a command writes must never clobber a file it did not write, nor point
outside the folder it writes (the output half of the fuzz suite in test_hostile_input.py).

Each case asserts what docs/threat-model.md promises ("What the tool writes, and what it never
touches"):
exit code 2, one line naming the path and the problem, no traceback, nothing created or changed;
and, for SIGTERM and two runs on one folder, what a real second process sees.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redteam.cli import main
from redteam.core.errors import InputError
from redteam.core.outputs import (
    MARKER,
    check_output_path,
    claim_output,
    seal_output,
    staged_output,
)
from tests.conftest import write_jsonl
from tests.test_hostile_input import AUDIT_ITEMS, refused, tree_state

HOSTILE_ARTIFACTS = ["../../../../etc/passwd", "../../secret.png", "..\\..\\win.png",
                     "/etc/passwd", "C:\\Windows\\win.ini", "artifacts/../../up.png",
                     "file:///etc/passwd", "\\\\server\\share\\x.png"]


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory, tiny_lm) -> Path:
    """A finished audit of the tiny LM (one probe), as test_hostile_input's ``finished_run``."""
    root = tmp_path_factory.mktemp("finished")
    data = write_jsonl(root / "audit.jsonl", AUDIT_ITEMS)
    assert main(["audit", str(tiny_lm), "--suite", "unlearning", "--probe",
                 "unlearning.knowledge_qa", "--data", str(data), "--out", str(root / "run"),
                 "--quiet"]) in (0, 1)
    return root / "run"


def _run_copy(run: Path, root: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(run, root / name))


# --- 1. hysac evaluate: the quadruplets' images are inputs --------------------------------------

def test_hysac_evaluate_never_overwrites_the_images_it_reads(capsys, tmp_path):
    """Images inside an earlier run of ours, named by the quadruplets: --overwrite would delete
    them before the probes read them. (The CLIP is only a config: the refusal comes before any
    model loads.)"""
    from PIL import Image

    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"architectures": ["CLIPModel"]}))
    run = tmp_path / "run"
    images = run / "images"
    images.mkdir(parents=True)
    for name, colour in (("safe.png", (20, 200, 20)), ("unsafe.png", (200, 20, 20))):
        Image.new("RGB", (16, 16), colour).save(images / name)
    seal_output(run, "audit")  # the folder is ours: --overwrite alone would clear it
    quads = write_jsonl(tmp_path / "quads.jsonl", [{
        "safe_image": "run/images/safe.png", "unsafe_image": "run/images/unsafe.png",
        "safe_caption": "a photo of a park", "unsafe_caption": "a photo of a fight"}])
    refused(capsys, tmp_path, ["hysac", "evaluate", clip, quads, "--out", run, "--overwrite"],
            f"{run}: --out must not contain the folder of the data's images "
            f"{images.resolve()}")


# --- 2. report diff: the JSON beside the page is new too -----------------------------------------

def test_report_diff_never_replaces_the_json_beside_its_page(capsys, tmp_path, audit_run):
    a, b = _run_copy(audit_run, tmp_path, "a"), _run_copy(audit_run, tmp_path, "b")
    (tmp_path / "diff.json").write_text("the user's own diff.json")
    refused(capsys, tmp_path, ["report", "diff", a, b, "--out", tmp_path / "diff.html"],
            f"{tmp_path / 'diff.json'}: --out exists")
    refused(capsys, tmp_path, ["report", "diff", a, b, "--out", tmp_path / "new.json"],
            "--out names the HTML page; its JSON form is written beside it")
    (tmp_path / "diff.json").unlink()
    assert main(["report", "diff", str(a), str(b), "--out", str(tmp_path / "diff.html")]) == 0
    assert json.loads((tmp_path / "diff.json").read_text())["counts"]["unchanged"] >= 1
    capsys.readouterr()
    refused(capsys, tmp_path, ["report", "diff", a, b, "--out", tmp_path / "diff.html"],
            "diff.html: --out exists")


# --- 3. report RUN: replaces only files of ours ------------------------------------------------

def test_report_never_replaces_files_of_a_folder_we_did_not_write(capsys, tmp_path,
                                                                 audit_run):
    user = _run_copy(audit_run, tmp_path, "U")
    (user / MARKER).unlink()  # the user's folder: findings.json and a report of their own
    (user / "report.html").write_text("the user's report")
    (user / "findings.sarif").write_text("the user's SARIF")
    refused(capsys, tmp_path, ["report", user, "--format", "html,sarif"],
            f"{user / 'report.html'}: not replaced, because redteam did not write it")
    refused(capsys, tmp_path, ["report", user, "--format", "sarif"],
            f"{user / 'findings.sarif'}: not replaced, because redteam did not write it")
    (user / "report.html").unlink()
    assert main(["report", str(user)]) == 0  # nothing of theirs is replaced: allowed
    assert "<html" in (user / "report.html").read_text()


def test_report_replaces_its_own_files_but_not_those_added_or_edited(capsys, tmp_path,
                                                                    audit_run):
    run = _run_copy(audit_run, tmp_path)
    assert main(["report", str(run), "--format", "html,sarif"]) == 0  # ours, unchanged
    assert main(["report", str(run), "--format", "html,sarif"]) == 0  # recorded: still ours
    capsys.readouterr()
    (run / "junit.xml").write_text("<the user's junit/>")
    refused(capsys, tmp_path, ["report", run, "--format", "junit"],
            "junit.xml: not replaced, because redteam did not write it (not one of the files")
    (run / "findings.sarif").write_text("edited by hand")
    refused(capsys, tmp_path, ["report", run, "--format", "sarif"],
            "findings.sarif: not replaced, because it changed since redteam wrote it")


# --- 4. artifact paths stay inside the run folder ----------------------------------------------

@pytest.mark.parametrize("artifact", HOSTILE_ARTIFACTS)
def test_artifacts_outside_the_run_folder_are_refused(capsys, tmp_path, audit_run, artifact):
    run = _run_copy(audit_run, tmp_path)
    document = json.loads((run / "findings.json").read_text())
    document["findings"][0]["artifacts"] = ["artifacts/fine.png", artifact]
    (run / "findings.json").write_text(json.dumps(document))
    line = refused(capsys, tmp_path, ["report", run],
                   "findings[0].artifacts[1]: expected a relative path inside the run folder")
    assert str(run / "findings.json") in line


def test_the_report_never_links_outside_the_run_folder(audit_run):
    """A document still in memory (not read back, so not schema-checked) is rendered with the
    same rule: such a path is shown as text, never linked or loaded."""
    from reports.html import render_report, safe_href

    assert safe_href("artifacts/trigger.png") == "artifacts/trigger.png"
    assert [safe_href(path) for path in HOSTILE_ARTIFACTS] == [None] * len(HOSTILE_ARTIFACTS)
    document = json.loads((audit_run / "findings.json").read_text())
    document["findings"][0]["artifacts"] = ["artifacts/ok.png", "../../secret.png"]
    html = render_report(document)
    assert 'src="artifacts/ok.png"' in html and "secret.png" in html
    assert 'src="../' not in html and 'href="../' not in html


# --- 5. two runs on one new folder ------------------------------------------------------------

def test_second_claim_of_a_new_folder_fails(tmp_path):
    out = tmp_path / "run"
    check_output_path(out, {})
    check_output_path(out, {})  # a second run checked it too, while it was still new
    claim_output(out, "audit")
    with pytest.raises(InputError, match="already being written by another run"):
        claim_output(out, "audit")
    seal_output(out)
    check_output_path(out, {}, overwrite=True)  # our finished run: --overwrite replaces it
    check_output_path(out, {}, overwrite=True)
    claim_output(out, "audit")
    with pytest.raises(InputError, match="already being written by another run"):
        claim_output(out, "audit")  # the earlier output it was allowed to replace is gone


def test_second_staged_output_on_a_new_folder_fails_before_its_work(tmp_path):
    out = tmp_path / "model"
    check_output_path(out, {})
    check_output_path(out, {})
    with staged_output(out, "model") as staging:
        (staging / "weights").write_text("first")
        with pytest.raises(InputError, match="already being written by another run"), \
                staged_output(out, "model"):
            pytest.fail("the second run's work started")
    assert (out / "weights").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left


def test_overwrite_of_our_staged_output_still_replaces_it(tmp_path):
    out = tmp_path / "model"
    with staged_output(out, "model") as staging:
        (staging / "weights").write_text("first")
    check_output_path(out, {}, overwrite=True)
    with staged_output(out, "model") as staging:
        (staging / "weights").write_text("second")
    assert (out / "weights").read_text() == "second"
    assert json.loads((out / MARKER).read_text())["files"].keys() == {"weights"}


CLAIMANT = """
import sys
from redteam.core.errors import InputError
from redteam.core.outputs import check_output_path, claim_output, seal_output
out = sys.argv[1]
check_output_path(out, {})
print("checked", flush=True)
sys.stdin.readline()  # go
try:
    claim_output(out, "audit")
except InputError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
if sys.argv[2] == "seal":
    seal_output(out)
print("claimed", flush=True)
sys.stdin.readline()
"""


def _claimant(out: Path, seal: bool) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", CLAIMANT, str(out),
                                "seal" if seal else "open"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.stdout.readline().strip() == "checked"
    return process


@pytest.mark.parametrize("first_done", [True, False], ids=["first finished", "first running"])
def test_two_processes_on_one_new_folder(tmp_path, first_done):
    """Both check the new folder, then claim it: the second claim, whether the first run has
    finished (sealed) or is still writing, fails with one line and leaves the first's output."""
    out = tmp_path / "run"
    first, second = _claimant(out, first_done), _claimant(out, first_done)
    first.stdin.write("\n")
    first.stdin.flush()
    assert first.stdout.readline().strip() == "claimed"
    marker = (out / MARKER).read_bytes()
    before = tree_state(tmp_path)
    _, err = second.communicate("\n\n", timeout=60)
    first.communicate("\n", timeout=60)
    lines = err.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, err
    assert lines[0] == (f"error: {out}: already being written by another run (it changed "
                        "after this run checked it); choose a new folder")
    assert tree_state(tmp_path) == before and (out / MARKER).read_bytes() == marker


# --- 6. paths the file system cannot hold, places we cannot write ---------------------------

@pytest.fixture
def run_inputs(tmp_path, tiny_lm) -> dict[str, Path]:
    return {"M": tiny_lm, "J": write_jsonl(tmp_path / "audit.jsonl", AUDIT_ITEMS),
            "root": tmp_path}


def test_over_long_output_names_are_one_line(capsys, run_inputs):
    root, audit = run_inputs["root"], ["audit", run_inputs["M"], "--suite", "unlearning",
                                       "--data", run_inputs["J"], "--out"]
    line = refused(capsys, root, [*audit, root / ("a" * 300)], "--out has a name of 300 bytes")
    assert len(line) < 400
    refused(capsys, root, [*audit, root / ("é" * 130) / "run"], "a name of 260 bytes")
    refused(capsys, root, [*audit, root.joinpath(*["b" * 200] * 21)], "--out path is")
    refused(capsys, root, ["unlearn", run_inputs["M"], "--method", "ga", "--data",
                           run_inputs["J"], "--out", root / ("u" * 250)],
            "a name of 250 bytes (uuuu")  # its staging folder's name would not fit
    refused(capsys, root, ["report", "diff", root, root, "--out", root / ("d" * 300 + ".html")],
            "--out has a name of 305 bytes")


def _read_only(folder: Path, monkeypatch) -> Path:
    """``folder``, read-only; as root (who may write anyway) the OS is made to say so."""
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        real = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
            False if Path(path) == folder and mode & os.W_OK else real(path, mode, **kw)))
    return folder


def _image_folder(folder: Path) -> Path:
    """Two 16×16 PNGs in two class folders: enough for ``protect`` to reach its output check."""
    from PIL import Image

    for label, colour in (("0", (200, 30, 30)), ("1", (30, 30, 200))):
        (folder / label).mkdir(parents=True)
        Image.new("RGB", (16, 16), colour).save(folder / label / "a.png")
    return folder


def test_read_only_destinations_are_refused_before_any_work(capsys, run_inputs, monkeypatch):
    root = run_inputs["root"]
    data = _image_folder(root / "D")
    locked = _read_only(root / "locked", monkeypatch)
    try:
        refused(capsys, root, ["protect", data, "--out", locked / "new" / "p"],
                f"--out cannot be written: {locked} is read-only or not writable by you")
        refused(capsys, root, ["audit", run_inputs["M"], "--suite", "unlearning", "--data",
                               run_inputs["J"], "--out", locked], f"{locked} is read-only")
        refused(capsys, root, ["report", "diff", root, root, "--out", locked / "d.html"],
                f"{locked} is read-only")
    finally:
        locked.chmod(0o755)


# --- 7. SIGTERM while a model is staged -------------------------------------------------------

def test_sigterm_during_unlearn_leaves_no_staging_folder(run_inputs):
    root, out = run_inputs["root"], run_inputs["root"] / "unlearned"
    before = tree_state(root)
    process = subprocess.Popen(
        [sys.executable, "-m", "redteam", "unlearn", str(run_inputs["M"]), "--method", "ga",
         "--data", str(run_inputs["J"]), "--out", str(out), "--epochs", "100000", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not list(root.glob(".unlearned.*.tmp")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no staging folder appeared"
            time.sleep(0.05)
        assert (out / MARKER).is_file()  # the new folder is claimed while it is staged
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    lines = stderr.strip().splitlines()
    assert process.returncode == 130, stderr
    assert lines == ["error: interrupted"], stderr
    assert "Traceback" not in stderr + stdout
    assert tree_state(root) == before  # neither the staging folder nor the claimed --out
