"""The command line: one clear line and exit code 2 on bad input, never a traceback."""

import subprocess
import sys

import pytest

from redteam import __version__
from redteam.cli import main
from tests.conftest import make_tiny_lm, write_jsonl


def _run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version_and_list(capsys):
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and __version__ in out
    code, out, _ = _run(capsys, "list", "--suite", "unlearning")
    assert code == 0
    assert "unlearning.membership_inference" in out and "arXiv:2407.06460" in out


@pytest.mark.parametrize("args, message", [
    (("list", "--suite", "nope"), "unknown suite"),
    (("audit", "MISSING", "--suite", "unlearning"), "does not exist"),
    (("audit", "TINY", "--suite", "nope"), "unknown suite"),
    (("audit", "TINY", "--suite", "unlearning", "--probe", "x.y"), "unknown probe"),
    (("audit", "TINY", "--suite", "unlearning", "--bogus"), "No such option"),
    (("audit", "TINY", "--suite", "unlearning", "--data", "BAD"), "bad.jsonl:2: not valid JSON"),
    (("audit", "PLAIN", "--suite", "unlearning"), "not a model directory"),
    (("report", "PLAIN"), "not a redteam run directory"),
    (("unlearn", "TINY", "--method", "ga", "--data", "BAD", "--out", "OUT"), "bad.jsonl:2"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tiny_lm, tmp_path, args, message):
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"split": "forget"}', "{oops"])
    (tmp_path / "plain").mkdir()
    names = {"MISSING": str(tmp_path / "missing"), "TINY": str(tiny_lm), "BAD": str(bad),
             "PLAIN": str(tmp_path / "plain"), "OUT": str(tmp_path / "out")}
    code, out, err = _run(capsys, *[names.get(a, a) for a in args])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out
    assert not (tmp_path / "out").exists()


def test_pickle_only_model_exit_2_without_output(capsys, tmp_path):
    model = make_tiny_lm(tmp_path / "m", safetensors=False)
    code, _, err = _run(capsys, "audit", str(model), "--suite", "unlearning",
                        "--out", str(tmp_path / "run"))
    assert code == 2 and "only pickle weights" in err
    assert not (tmp_path / "run").exists()


def test_console_entry_point_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "redteam", "audit", str(tmp_path / "nope"),
                           "--suite", "unlearning"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr


def test_unlearn_writes_a_new_model_and_leaves_the_source_alone(capsys, tiny_lm, tmp_path):
    from redteam.core.fileio import hash_tree
    from redteam.targets import load_target

    data = write_jsonl(tmp_path / "a.jsonl", [
        {"split": "forget", "question": "Who wrote it?", "answer": "Elara Voss",
         "text": "Elara Voss wrote it."},
        {"split": "retain", "question": "Where?", "answer": "Oslo"},
    ])
    before = hash_tree(tiny_lm)
    out = tmp_path / "unlearned"
    code, stdout, err = _run(capsys, "unlearn", str(tiny_lm), "--method", "npo", "--data",
                             str(data), "--out", str(out), "--epochs", "2", "--lr", "1e-2",
                             "--quiet")
    assert code == 0, err
    assert hash_tree(tiny_lm) == before
    assert (out / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".unlearned")]
    original, unlearned = load_target(tiny_lm).model, load_target(out).model
    name = "transformer.h.0.mlp.c_fc.weight"
    assert not original.state_dict()[name].equal(unlearned.state_dict()[name])
    code, _, err = _run(capsys, "unlearn", str(tiny_lm), "--method", "npo", "--data",
                        str(data), "--out", str(out))
    assert code == 2 and "not empty" in err
