"""``--retrain-results RUN``: the retrained model's measurements re-used from an earlier run.

A run given them must equal a run given the retrained model itself, whether the earlier run
audited the gold model (its target measurements) or was given it as ``--retrain``; measurements
taken another way (other seed, settings, data) are refused with exit 2.
"""

import json

import pytest

from redteam.cli import main
from redteam.engine import AuditRequest, ModelCache, run_audit
from redteam.probes import REGISTRY, load_plugins

load_plugins()
COMPARING = sorted(name for name, cls in REGISTRY.items() if cls.uses_retrain)


def _audit(zoo, tmp_path, name, model, **kwargs):
    return run_audit(AuditRequest(model=zoo[model], suite="unlearning", data=zoo["audit"],
                                  probes=COMPARING, out=tmp_path / name, device="cpu",
                                  quiet=True, **kwargs))


def _comparable(finding) -> dict:
    record = finding.to_dict()
    record.pop("duration_s", None)
    return record


@pytest.fixture(scope="module")
def runs(unlearning_zoo, tmp_path_factory):
    """npo audited with --retrain; the gold model audited itself; npo with --retrain-results
    of each of those two runs. (The reference calibrates the prompt format, so all four runs
    ask in the same one.)"""
    zoo, tmp = unlearning_zoo, tmp_path_factory.mktemp("gold")
    with_model = _audit(zoo, tmp, "with-model", "npo", reference=zoo["original"],
                        retrain=zoo["retrain"])
    gold = _audit(zoo, tmp, "gold", "retrain", reference=zoo["original"])  # asks alike
    return {"with model": with_model, "gold": gold,
            "from gold run": _audit(zoo, tmp, "from-gold", "npo", reference=zoo["original"],
                                    retrain_results=gold.out_dir),
            "from earlier run": _audit(zoo, tmp, "from-earlier", "npo",
                                       reference=zoo["original"],
                                       retrain_results=with_model.out_dir)}


@pytest.mark.parametrize("source", ["from gold run", "from earlier run"])
def test_recorded_measurements_give_the_findings_of_the_model(runs, source):
    expected = [_comparable(f) for f in runs["with model"].findings]
    got = [_comparable(f) for f in runs[source].findings]
    assert [f["probe"] for f in got] == [f["probe"] for f in expected] == COMPARING
    for mine, theirs in zip(got, expected):
        assert mine == theirs, mine["probe"]
    compared = [f for f in runs[source].findings if f.status != "skipped"]
    assert len(compared) >= 6 and all("retrain" in f.details["measurements"] for f in compared)


def test_the_run_records_where_the_measurements_came_from(runs):
    document = json.loads((runs["from gold run"].out_dir / "findings.json").read_text())
    gold = json.loads((runs["gold"].out_dir / "findings.json").read_text())
    inputs = document["run"]["inputs"]
    assert inputs["retrain"] == gold["run"]["target"]["files"]
    assert set(inputs["retrain results"]) == {"findings.json"}


def _refused(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_measurements_taken_another_way_are_refused(runs, unlearning_zoo, tmp_path, capsys):
    zoo, gold = unlearning_zoo, runs["gold"].out_dir
    base = ["audit", str(zoo["npo"]), "--suite", "unlearning", "--data", str(zoo["audit"]),
            "--probe", "unlearning.knowledge_qa", "--reference", str(zoo["original"]), "--quiet"]
    err = _refused([*base, "--retrain-results", str(gold), "--seed", "3",
                    "--out", str(tmp_path / "a")], capsys)
    assert "seed" in err and "findings.json" in err
    config = tmp_path / "audit.toml"
    config.write_text('[probes."unlearning.knowledge_qa"]\nmargin = 0.25\n')
    err = _refused([*base, "--retrain-results", str(gold), "--config", str(config),
                    "--out", str(tmp_path / "b")], capsys)
    assert "unlearning.knowledge_qa" in err and "settings" in err
    other = tmp_path / "other.jsonl"
    other.write_text("".join(line + "\n" for line in
                             zoo["audit"].read_text().splitlines()[:-1]))
    err = _refused([*base[:4], "--data", str(other), *base[6:], "--retrain-results", str(gold),
                    "--out", str(tmp_path / "c")], capsys)
    assert "other audit data" in err
    err = _refused([*base, "--retrain-results", str(gold), "--prompt-format", "plain",
                    "--shots", "1", "--out", str(tmp_path / "f")], capsys)
    assert "prompt format" in err
    err = _refused([*base, "--retrain-results", str(gold), "--retrain", str(zoo["retrain"]),
                    "--out", str(tmp_path / "d")], capsys)
    assert "give one" in err
    err = _refused([*base, "--retrain-results", str(tmp_path), "--out", str(tmp_path / "e")],
                   capsys)
    assert "no findings.json" in err
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_a_probe_the_earlier_run_did_not_run_is_refused(unlearning_zoo, tmp_path, capsys):
    zoo = unlearning_zoo
    asked = ["--prompt-format", "plain", "--shots", "3"]  # both runs ask alike
    assert main(["audit", str(zoo["retrain"]), "--suite", "unlearning", "--data",
                 str(zoo["audit"]), "--probe", "unlearning.verbatim", "--quiet", *asked,
                 "--out", str(tmp_path / "gold")]) in (0, 1)
    capsys.readouterr()
    err = _refused(["audit", str(zoo["npo"]), "--suite", "unlearning", "--data",
                    str(zoo["audit"]), "--probe", "unlearning.knowledge_qa", "--quiet", *asked,
                    "--retrain-results", str(tmp_path / "gold"), "--out", str(tmp_path / "x")],
                   capsys)
    assert "did not run unlearning.knowledge_qa" in err


def test_runs_sharing_a_cache_measure_each_comparison_model_once(unlearning_zoo, tmp_path):
    """``redteam demo`` audits many variants against the same reference and retrain models in
    one process: their measurements are re-used, and no finding changes."""
    zoo, probes = unlearning_zoo, ["unlearning.knowledge_qa", "unlearning.relearning_attack"]

    def audit(variant: str, cache: ModelCache, name: str):
        return run_audit(AuditRequest(
            model=zoo[variant], suite="unlearning", data=zoo["audit"], probes=probes,
            reference=zoo["original"], retrain=zoo["retrain"], out=tmp_path / name,
            device="cpu", quiet=True), cache)

    shared = ModelCache()
    together = [audit(v, shared, f"shared-{v}") for v in ("ga", "npo")]
    kept = len(shared.measurements)
    # knowledge_qa: ga, npo, and the reference and retrain once; relearning (which attacks the
    # target and the retrained model only): ga, npo, retrain
    assert kept == 4 + 3
    apart = [audit(v, ModelCache(), f"apart-{v}") for v in ("ga", "npo")]
    for one, other in zip(together, apart):
        assert [_comparable(f) for f in one.findings] == [_comparable(f) for f in other.findings]
