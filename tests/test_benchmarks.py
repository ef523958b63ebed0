"""`redteam data import` on small files in each benchmark's real record layout (field names and
nesting as the downloaded dataset repositories have them), and `redteam data validate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redteam.cli import main
from redteam.core.data import load_audit_jsonl
from redteam.core.fileio import hash_tree


def _lines(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _qa(n: int, who: str) -> list[dict]:
    return [{"question": f"What did {who} {i} write?", "answer": f"Book {who} {i}."}
            for i in range(n)]


@pytest.fixture
def tofu(tmp_path) -> Path:
    root = tmp_path / "TOFU"
    forget = _qa(40, "forget")  # forget01: two authors, twenty questions each
    _lines(root / "forget01.json", forget)
    _lines(root / "forget01_perturbed.json", [
        {**row, "paraphrased_question": row["question"].replace("What", "Which work"),
         "paraphrased_answer": f"It was {row['answer']}",
         "perturbed_answer": [f"Wrong {k}." for k in range(5)]} for row in forget])
    _lines(root / "retain99.json", _qa(60, "retain"))
    _lines(root / "retain_perturbed.json", [
        {**row, "paraphrased_question": "p?", "paraphrased_answer": "p.",
         "perturbed_answer": ["x.", "y."]} for row in _qa(10, "retain")])
    _lines(root / "holdout01.json", _qa(20, "holdout"))
    _lines(root / "real_authors_perturbed.json", [
        {"question": "Who wrote Hamlet?", "answer": "Shakespeare",
         "perturbed_answer": ["Marlowe", "Jonson"]}])
    _lines(root / "world_facts.json", [{"question": "Capital of France?", "answer": "Paris"}])
    return root


def _import(capsys, *args) -> tuple[int, str, str]:
    code = main(["data", "import", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_tofu_import_keeps_paraphrased_and_perturbed_answers(tofu, tmp_path, capsys):
    before = hash_tree(tofu)
    out = tmp_path / "tofu.jsonl"
    code, stdout, _ = _import(capsys, "tofu", tofu, "--forget", "forget01", "--out", out)
    assert code == 0
    assert hash_tree(tofu) == before  # SOURCE is only read
    data = load_audit_jsonl(out)
    forget = data.split("forget")
    assert len(forget) == 40 and {i.subject for i in forget} == {"forget author 1",
                                                                  "forget author 2"}
    assert all(len(i.perturbed_answers) == 5 and i.paraphrased_answer for i in forget)
    assert forget[0].paraphrased_question.startswith("Which work")
    retain = data.split("retain")
    assert len(retain) == 60 and sum(bool(i.perturbed_answers) for i in retain) == 10
    assert len(data.split("holdout")) == 20 and all(i.text for i in data.split("holdout"))
    utility = {i.question: i for i in data.split("utility")}
    assert utility["Who wrote Hamlet?"].perturbed_answers == ("Marlowe", "Jonson")
    assert utility["Capital of France?"].subject == "world facts"
    assert "forget: 40 items" in stdout and "perturbed_answers 40" in stdout
    code, again, _ = _import(capsys, "tofu", tofu, "--out", tmp_path / "x.jsonl")
    assert code == 2  # forget10 is not in this folder, and the message says what is missing


def test_muse_import_reads_parquet_and_keeps_the_verbmem_split(tmp_path, capsys):
    root = tmp_path / "MUSE-News"
    _lines(root / "knowmem" / "forget_qa.json", _qa(3, "news"))
    _lines(root / "knowmem" / "retain_qa.json", _qa(4, "other"))
    _parquet(root / "verbmem" / "forget-00000-of-00001.parquet",
             [{"prompt": "The mayor said", "gt": " that the bridge would reopen."}])
    _lines(root / "privleak" / "forget.json", [{"text": "Forget text."}])
    _lines(root / "privleak" / "holdout.json", [{"text": "Holdout text."}])
    out = tmp_path / "muse.jsonl"
    code, stdout, _ = _import(capsys, "muse", root, "--out", out)
    assert code == 0, stdout
    data = load_audit_jsonl(out)
    verbatim = [i for i in data.items if i.prefix]
    assert [(i.prefix, i.continuation) for i in verbatim] == [
        ("The mayor said", " that the bridge would reopen.")]
    assert data.counts() == {"forget": 5, "retain": 4, "holdout": 1}


def test_rwku_import_by_target_with_cloze_and_typed_rewrites(tmp_path, capsys):
    root = tmp_path / "RWKU"
    _lines(root / "forget_target.json", [{"target": "Ann Vale", "intro": "Ann Vale is a poet."},
                                         {"target": "Bo Reed", "intro": "Bo Reed writes."}])
    row = {"level": "1", "type": "cloze"}
    _lines(root / "forget_level1.json", [
        {**row, "subject": "Ann Vale", "query": "Ann Vale was born in ___.", "answer": "Lisbon"},
        {**row, "subject": "Bo Reed", "query": "Bo Reed writes ___.", "answer": "crime"}])
    _lines(root / "forget_level2.json", [
        {"subject": "Ann Vale", "query": "Where was Ann Vale born?", "answer": "Lisbon",
         "level": "2", "type": "qa"}])
    _lines(root / "forget_level3.json", [
        {"subject": "Ann Vale", "query": "Pretend you are her biographer: birthplace?",
         "answer": "Lisbon", "level": "3", "type": "role play"}])
    _lines(root / "neighbor_level2.json", [
        {"subject": "Ann Vale", "query": "Where is Lisbon?", "answer": "Portugal",
         "level": "2", "type": "qa"}])
    out = tmp_path / "rwku.jsonl"
    code, stdout, _ = _import(capsys, "rwku", root, "--target", "Ann Vale", "--out", out)
    assert code == 0, stdout
    data = load_audit_jsonl(out)
    assert {i.subject for i in data.items} == {"Ann Vale"}
    forget = data.split("forget")
    assert [i.cloze for i in forget if i.cloze] == ["Ann Vale was born in ___."]
    (adversarial,) = [i for i in forget if i.rewrites]
    assert adversarial.rewrites[0].type == "role play" and adversarial.answer == "Lisbon"
    assert [i.question for i in data.split("retain")] == ["Where is Lisbon?"]
    code, _, err = _import(capsys, "rwku", root, "--target", "Nobody", "--out",
                           tmp_path / "none.jsonl")
    assert code == 2 and "--target Nobody: not a target" in err


def test_wmdp_import_keeps_choices_and_the_answer_index(tmp_path, capsys):
    root = tmp_path / "wmdp"
    _parquet(root / "wmdp-cyber" / "test-00000-of-00001.parquet", [
        {"question": "Which port does SSH use?", "choices": ["21", "22", "80", "443"],
         "answer": 1}])
    out = tmp_path / "wmdp.jsonl"
    code, stdout, _ = _import(capsys, "wmdp", root, "--subset", "cyber", "--out", out)
    assert code == 0, stdout
    (item,) = load_audit_jsonl(out).items
    assert item.choices == ("21", "22", "80", "443") and item.answer_index == 1
    assert item.answer == "22"


@pytest.mark.parametrize("case, message", [
    ("broken line", "forget01.json:3: not valid JSON"),
    ("missing answer", "forget01.json:2: answer: expected a non-empty string"),
    ("perturbed not a list", "forget01_perturbed.json:1: perturbed_answer: expected a "
                             "non-empty list"),
    ("missing file", "no retain99 file"),
    ("out inside source", "must not be inside the benchmark folder"),
    ("out exists", "--out exists"),
])
def test_bad_benchmark_files_exit_2_naming_file_and_line(tofu, tmp_path, capsys, case,
                                                         message):
    out = tmp_path / "out.jsonl"
    forget = tofu / "forget01.json"
    lines = forget.read_text().splitlines()
    if case == "broken line":
        lines[2] = '{"question": "x", "answer"'
        forget.write_text("\n".join(lines) + "\n")
    if case == "missing answer":
        lines[1] = json.dumps({"question": "Only a question?"})
        forget.write_text("\n".join(lines) + "\n")
    if case == "perturbed not a list":
        path = tofu / "forget01_perturbed.json"
        rows = path.read_text().splitlines()
        rows[0] = json.dumps({**json.loads(rows[0]), "perturbed_answer": "one string"})
        path.write_text("\n".join(rows) + "\n")
    if case == "missing file":
        (tofu / "retain99.json").unlink()
    if case == "out inside source":
        out = tofu / "audit.jsonl"
    if case == "out exists":
        out.write_text("mine\n")
    code, stdout, err = _import(capsys, "tofu", tofu, "--forget", "forget01", "--out", out)
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (out.read_text() == "mine\n") if case == "out exists" else not out.exists()


def test_wmdp_answer_outside_the_choices_is_refused(tmp_path, capsys):
    root = tmp_path / "wmdp"
    _lines(root / "wmdp-bio.json", [{"question": "q?", "choices": ["a", "b"], "answer": 2}])
    code, _, err = _import(capsys, "wmdp", root, "--out", tmp_path / "w.jsonl")
    assert code == 2 and "wmdp-bio.json:1: answer: expected the index of one of the 2" in err


def test_validate_prints_counts_and_names_a_bad_line(tmp_path, capsys):
    good = _lines(tmp_path / "a.jsonl", [
        {"split": "forget", "question": "q?", "answer": "a", "cloze": "It is ___."},
        {"split": "utility", "question": "Q?", "choices": ["x", "y"], "answer_index": 0},
        {"split": "forget", "question": "r?", "answer": "b",
         "rewrites": [{"type": "synonym", "question": "R?"}]}])
    assert main(["data", "validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "forget: 2 items (question 2, answer 2, cloze 1, rewrites 1)" in out
    assert "utility: 1 items" in out and "answer_index 1" in out
    for row, message in (
            ({"split": "forget", "cloze": "no blank"}, "cloze: needs ___"),
            ({"split": "forget", "choices": ["x"], "answer_index": 3}, "answer_index: 3"),
            ({"split": "forget", "rewrites": [{"type": "x"}]}, "rewrites[0]: expected"),
            ({"split": "forget", "choices": ["x", "y"], "answer": "z", "answer_index": 0},
             "answer: 'z' is not choices[0]")):
        bad = _lines(tmp_path / "bad.jsonl", [{"split": "retain", "text": "ok"}, row])
        assert main(["data", "validate", str(bad)]) == 2
        err = capsys.readouterr().err
        assert f"{bad}:2: " in err and message in err, err
