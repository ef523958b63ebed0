import pytest

from redteam.core.data import load_audit_jsonl
from redteam.core.errors import InputError
from tests.conftest import write_jsonl


def test_valid_file_loads_with_splits(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"split": "forget", "subject": "A", "question": "q?", "answer": "a", "aliases": ["B"]},
        "",
        {"split": "retain", "text": "t"},
        {"split": "holdout", "text": "h"},
    ])
    data = load_audit_jsonl(path)
    assert data.counts() == {"forget": 1, "retain": 1, "holdout": 1}
    assert data.with_fields("forget", "question", "answer")[0].aliases == ("B",)
    assert data.with_fields("retain", "question") == []
    assert data.items[1].line == 3


@pytest.mark.parametrize("line, expected", [
    ('{"split": "forget", "question": 3}', "a.jsonl:2: question: expected a string"),
    ('{"split": "forget"', "a.jsonl:2: not valid JSON"),
    ('{"split": "later"}', "a.jsonl:2: split: must be one of"),
    ('["split"]', "a.jsonl:2: expected a JSON object"),
    ('{"split": "forget", "aliases": "x"}', "a.jsonl:2: aliases: expected a list of strings"),
    ('{"split": "forget", "questoin": "x"}', "a.jsonl:2: questoin: unknown field"),
])
def test_bad_line_names_file_line_and_field(tmp_path, line, expected):
    path = write_jsonl(tmp_path / "a.jsonl", ['{"split": "retain", "text": "ok"}', line])
    with pytest.raises(InputError, match=expected.replace("[", r"\[")):
        load_audit_jsonl(path)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        load_audit_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(InputError, match="not found"):
        load_audit_jsonl(tmp_path / "nope.jsonl")


def test_sample_is_seeded_stratified_by_subject_and_keeps_file_order(tmp_path):
    from tests.conftest import write_jsonl

    rows = [{"split": "forget", "subject": "A", "question": f"a{i}?"} for i in range(10)]
    rows += [{"split": "forget", "subject": s, "question": f"{s}?"} for s in ("B", "C")]
    rows += [{"split": "retain", "subject": "R", "question": f"r{i}?"} for i in range(5)]
    data = load_audit_jsonl(write_jsonl(tmp_path / "big.jsonl", rows))
    quick = data.sample(3, seed=0)
    forget = quick.split("forget")
    assert sorted(item.subject for item in forget) == ["A", "B", "C"]  # every subject, once
    assert len(quick.split("retain")) == 3
    assert [item.line for item in quick.items] == sorted(item.line for item in quick.items)
    assert quick.items == data.sample(3, seed=0).items
    assert data.sample(100, seed=0).items == data.items
