"""Scoring profiles: each benchmark's answers scored by that benchmark's own scorer.

The same generation / reference pairs (tests/golden/inputs.json) scored under each profile give
what the benchmark's code gave on them (tests/golden/tofu.json, muse.json, rwku.json); the
profile is picked by the imported file's benchmark or by ``[scoring] profile``, and a bad value
is one line and exit code 2 before any model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redteam.cli import main
from redteam.core.data import load_audit_jsonl
from redteam.core.errors import InputError
from redteam.core.findings import RunRecord, findings_document
from redteam.core.metrics import rwku_rouge_l_recall
from redteam.core.text_scoring import PROFILE_TABLE, PROFILES, scoring_profile
from redteam.engine import measured_with, profile_of

GOLDEN = Path(__file__).parent / "golden"
TOLERANCE = 1e-6


def _golden(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def _values(name: str, function: str) -> dict:
    found = [v for v in _golden(name)["values"] if v["function"].startswith(function)]
    assert len(found) == 1
    return found[0]


PAIRS = _golden("inputs")["rouge_pairs"]
EXPECTED = {  # profile -> what the benchmark's own code scored on every pair
    "tofu": _values("tofu", "evaluate_util.py eval_rouge_recall")["rougeL_recall"],
    "default": _values("tofu", "evaluate_util.py eval_rouge_recall")["rougeL_recall"],
    "muse": _values("muse", "metrics/logger.py")["rougeL"],
    "rwku": _values("rwku", "LLaMA-Factory/src/llmtuner/eval/eval_forget.py")["rouge_l_recall"],
}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_scores_the_pairs_as_its_benchmark_does(profile):
    scored = [PROFILE_TABLE[profile].score(p["prediction"], p["reference"]) for p in PAIRS]
    assert scored == pytest.approx(EXPECTED[profile], abs=TOLERANCE)


def test_rwku_mean_matches_rwku_level_mean():
    mean = sum(rwku_rouge_l_recall(p["prediction"], p["reference"]) for p in PAIRS) / len(PAIRS)
    reference = _values("rwku", "LLaMA-Factory")["level_1_mean_over_all_pairs"]
    assert mean == pytest.approx(reference, abs=TOLERANCE)


def test_the_profiles_differ_where_the_benchmarks_do():
    """One pair, three benchmarks, three figures: why a profile is needed."""
    prediction, reference = "The answer is 1984, published in London.", "1984"
    assert PROFILE_TABLE["tofu"].score(prediction, reference) == 1.0
    assert PROFILE_TABLE["muse"].score(prediction, reference) == pytest.approx(0.25)
    assert PROFILE_TABLE["rwku"].score(prediction, reference) == 0.0  # "1984," is its word


def test_rwku_scorer_follows_the_package_on_sentences_and_blanks():
    # blank answers are RWKU's NOANSWER; a reference that says so is then matched
    assert rwku_rouge_l_recall("   ", "NOANSWER") == 1.0
    assert rwku_rouge_l_recall("", "a quiet town") == 0.0
    # summary level: sentences split at ".", LCS words united over sentence pairs
    assert rwku_rouge_l_recall("the cat. the dog", "the dog. the cat") == 1.0
    # distinct words: a repeated reference word counts once
    assert rwku_rouge_l_recall("dogs", "dogs dogs") == 1.0
    # no sentence at all (the package raises): nothing matched
    assert rwku_rouge_l_recall("...", "a") == 0.0


def test_profile_keys_and_labels_never_call_an_f1_a_recall():
    assert (PROFILE_TABLE["muse"].key, PROFILE_TABLE["muse"].label) == ("rouge_l_f1",
                                                                        "ROUGE-L F1")
    for name in ("default", "tofu", "rwku"):
        assert PROFILE_TABLE[name].key == "rouge_l_recall"


@pytest.mark.parametrize("benchmark, setting, expected", [
    ("", "auto", "default"), ("tofu", "auto", "tofu"), ("muse", "auto", "muse"),
    ("rwku", "auto", "rwku"), ("wmdp", "auto", "default"), ("muse", "tofu", "tofu"),
    ("", "rwku", "rwku")])
def test_profile_comes_from_the_data_unless_set(benchmark, setting, expected):
    assert scoring_profile(setting, benchmark).name == expected


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_imported_file_names_its_benchmark_and_a_mixture_is_refused(tmp_path):
    plain = load_audit_jsonl(_jsonl(tmp_path / "plain.jsonl", [{"split": "forget"}]))
    assert plain.benchmark == ""
    muse = load_audit_jsonl(_jsonl(tmp_path / "muse.jsonl", [
        {"split": "forget", "benchmark": "muse"}, {"split": "retain", "benchmark": "muse"}]))
    assert muse.benchmark == "muse" and muse.sample(1).benchmark == "muse"
    with pytest.raises(InputError, match=r"mixed.jsonl:2: benchmark: 'rwku', but line 1"):
        load_audit_jsonl(_jsonl(tmp_path / "mixed.jsonl", [
            {"split": "forget", "benchmark": "muse"}, {"split": "forget", "benchmark": "rwku"}]))
    with pytest.raises(InputError, match=r"odd.jsonl:1: benchmark: must be one of"):
        load_audit_jsonl(_jsonl(tmp_path / "odd.jsonl", [{"split": "forget",
                                                          "benchmark": "mmlu"}]))


def test_data_import_writes_the_benchmark_on_every_line(tmp_path):
    from redteam.commands.data_import import import_benchmark

    source = tmp_path / "wmdp"
    source.mkdir()
    _jsonl(source / "wmdp-bio.jsonl", [{"question": "q?", "choices": ["a", "b", "c", "d"],
                                        "answer": 2}])
    data = import_benchmark("wmdp", source, tmp_path / "out.jsonl", subset="bio")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(line["benchmark"] == "wmdp" for line in lines)
    assert data.benchmark == "wmdp"


def test_bad_profile_exits_2_with_one_line(tmp_path, capsys):
    model = tmp_path / "model"  # never loaded: settings are checked first
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    config = tmp_path / "audit.toml"
    config.write_text('[scoring]\nprofile = "musee"\n')
    data = _jsonl(tmp_path / "audit.jsonl", [{"split": "forget", "question": "q",
                                             "answer": "a"}])
    code = main(["audit", str(model), "--suite", "unlearning", "--data", str(data),
                 "--config", str(config), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "scoring.profile = 'musee': expected one of auto, default, tofu, muse, rwku" in err[0]
    assert not (tmp_path / "run").exists()


def test_profile_is_in_the_run_record_and_the_retrain_settings(tmp_path):
    data = load_audit_jsonl(_jsonl(tmp_path / "muse.jsonl", [{"split": "forget",
                                                              "benchmark": "muse"}]))
    scoring = {"batch_size": 16, "max_length": 512, "profile": "auto"}
    profile = profile_of(scoring, data)
    assert measured_with([], scoring, {"max_items": 0}, data)["[scoring]"]["profile"] == "muse"
    run = RunRecord(tool_version="x", command=[], suite="unlearning", target={},
                    scoring=profile.record())
    written = json.loads(json.dumps(findings_document(run, [])))["run"]["scoring"]
    assert written["profile"] == "muse" and written["metric"] == "ROUGE-L F1"
    assert written["version"].startswith("rouge-score ")
    assert "muse_bench" in written["source"]
    assert PROFILE_TABLE["rwku"].record()["version"] == "written in redteam"


def test_report_names_the_profile_and_scorer():
    from reports.html import _scoring

    view = _scoring(PROFILE_TABLE["rwku"].record())
    assert view["profile"] == "rwku" and "NOANSWER" in view["scorer"]
    assert _scoring({}) == {} and _scoring(None) == {}
