"""The unlearning zoo: the fictitious world, the audit data and the trained models.

The model tests use the session fixture ``unlearning_zoo`` (tests/conftest.py, size "test").
"""

from __future__ import annotations

import json
import random

import pytest

from redteam.core.data import load_audit_jsonl
from redteam.core.fileio import atomic_dir
from redteam.core.prompts import context_qa_block, cut_answer
from redteam.zoo import audit_items, build_unlearning_zoo, make_world, write_audit_jsonl, zoo_home
from redteam.zoo.authors import ATTRIBUTES, reading_comprehension
from redteam.zoo.build import UNLEARNED, VARIANTS
from redteam.zoo.evaluate import generate_greedy, qa_accuracy, reading_accuracy
from redteam.zoo.lm import load_lm

# ----------------------------------------------------------------------------- the world


def test_world_is_deterministic_under_a_seed():
    assert audit_items(make_world("demo", 0)) == audit_items(make_world("demo", 0))
    assert audit_items(make_world("demo", 0)) != audit_items(make_world("demo", 1))


def test_demo_world_size_splits_and_names():
    world = make_world("demo", 0)
    assert len(world.trained) >= 40 and len(ATTRIBUTES) >= 5
    assert all(len(author.facts) >= 5 for author in world.authors)
    assert len(world.forget) == len(world.trained) // 10
    assert len(world.holdout) >= 4
    assert len(world.retain) == len(world.trained) - len(world.forget)
    names = [author.name for author in world.authors]
    aliases = [alias for author in world.authors for alias in author.aliases]
    assert len(set(names + aliases)) == len(names) + len(aliases)
    assert 0.15 < sum(bool(author.aliases) for author in world.authors) / len(names) < 0.5
    assert all(len(author.facts["book"].split()) >= 3 for author in world.authors)  # multi-word


def test_biography_states_every_fact():
    author = make_world("test", 3).authors[0]
    bio = author.biography()
    for sentence, (_, answer) in zip(author.sentences(), author.qa_pairs(), strict=True):
        assert sentence in bio and answer in sentence
    for alias in author.aliases:
        assert alias in bio


def test_audit_items_have_the_design_fields(tmp_path):
    world = make_world("test", 0)
    items = audit_items(world)
    path = write_audit_jsonl(items, tmp_path / "audit.jsonl")
    data = load_audit_jsonl(path)  # the CLI's validator accepts the file
    assert data.counts() == {
        "forget": len(world.forget) * (len(ATTRIBUTES) + 1),
        "retain": len(world.retain) * (len(ATTRIBUTES) + 1),
        "holdout": len(world.holdout) * (len(ATTRIBUTES) + 1),
    }
    qa = [item for item in items if "question" in item]
    assert len(qa) == len(world.authors) * len(ATTRIBUTES)
    for item in qa:
        assert {"split", "subject", "question", "answer", "text", "aliases", "choices"} <= set(item)
        assert item["subject"] in item["question"] and item["answer"] in item["text"]
        assert len(set(item["choices"])) == 4 and item["answer"] in item["choices"]
    bios = [item for item in items if "question" not in item]
    assert all(len(item["text"]) > 150 for item in bios)
    assert [json.loads(line) for line in path.read_text().splitlines()] == items


def test_reading_comprehension_is_about_other_entities():
    world = make_world("demo", 0)
    names = {author.name for author in world.authors}
    first_names = {name.split()[0] for name in names}
    examples = reading_comprehension(random.Random(0), 500)
    assert len({context for context, _, _ in examples}) > 450  # freshly drawn, not a small pool
    for context, _, answer in examples:
        assert answer in context
        assert not any(name in context for name in names)
    # Some entities look like authors (half of the name from the authors' pools), so the model
    # learns to read a context whatever the name, not only for unfamiliar-looking names.
    assert any(first_names & set(question.replace("?", "").split())
               for _, question, _ in examples)


# ----------------------------------------------------------------------------- the cache


def test_zoo_home_follows_redteam_home(monkeypatch, tmp_path):
    monkeypatch.setenv("REDTEAM_HOME", str(tmp_path))
    assert zoo_home() == tmp_path / "zoo"
    monkeypatch.delenv("REDTEAM_HOME")
    assert zoo_home().parts[-3:] == (".cache", "redteam", "zoo")


def test_atomic_dir_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_zoo_trains_the_same_model_whatever_the_callers_thread_count(protection_zoo,
                                                                        tmp_path):
    """torch splits its sums between threads, so a model trained on another thread count is
    another model (the demo's verdicts would follow the machine's cores). The builders train
    on ``DEMO_THREADS`` and give the caller its own count back: a build called from a
    thread count other than pytest's equals the session's, called from pytest's."""
    import torch

    from redteam.core.fileio import sha256_file
    from redteam.core.training import fixed_threads
    from redteam.zoo.protection import build_protection_zoo

    other = 3 if torch.get_num_threads() == 1 else 1
    with fixed_threads(other):
        zoo = build_protection_zoo(tmp_path, size="test", seed=0)
        assert torch.get_num_threads() == other
    digests = [sha256_file(built["surrogate"] / "model.safetensors")
               for built in (zoo, protection_zoo)]
    assert digests[0] == digests[1]


def test_zoo_is_complete_and_cached(unlearning_zoo):
    assert set(unlearning_zoo) == {*VARIANTS, "audit"}
    home = unlearning_zoo["original"].parent
    assert not [p for p in home.iterdir() if p.name.startswith(".")]  # no temp leftovers
    stamps = {p: p.stat().st_mtime_ns for p in home.rglob("*.safetensors")}
    again = build_unlearning_zoo(home.parent, size="test", seed=0, quiet=True)
    assert again == unlearning_zoo
    assert stamps == {p: p.stat().st_mtime_ns for p in home.rglob("*.safetensors")}
    manifest = json.loads((home / "zoo.json").read_text())
    assert manifest["size"] == "test" and set(manifest["unlearning"]) == set(UNLEARNED)


# ----------------------------------------------------------------------------- the models


@pytest.fixture(scope="module")
def zoo_models(unlearning_zoo):
    return {name: load_lm(unlearning_zoo[name]) for name in VARIANTS}


@pytest.fixture(scope="module")
def zoo_items(unlearning_zoo):
    return [json.loads(line) for line in unlearning_zoo["audit"].read_text().splitlines()]


@pytest.fixture(scope="module")
def accuracy(zoo_models, zoo_items):
    """Few-shot greedy QA accuracy of every variant on the forget and retain questions."""
    return {name: {split: qa_accuracy(model, tokenizer, zoo_items, split)
                   for split in ("forget", "retain")}
            for name, (model, tokenizer) in zoo_models.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_saved_directories_load_offline_from_safetensors(unlearning_zoo, variant):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = unlearning_zoo[variant]
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"]
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True,
                                                 use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert tokenizer.pad_token is not None and tokenizer.pad_token != tokenizer.eos_token
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    if variant in UNLEARNED:
        record = json.loads((folder / "unlearning.json").read_text())
        assert record["method"] == variant and record["forget_texts"] > 0


def test_original_answers_its_trained_questions(accuracy):
    assert accuracy["original"]["forget"] >= 0.9
    assert accuracy["original"]["retain"] >= 0.9


def test_retrain_does_not_know_the_forget_authors(accuracy):
    assert accuracy["retrain"]["forget"] < 0.3
    assert accuracy["retrain"]["retain"] >= 0.8


# SimNPO's loss saturates once the forget texts' mean token NLL is well above 1/beta: at the
# shared settings it forgets less than the others (forget QA of the test zoo, with the shots
# the audit picks: 1.0 -> 0.75), which is where it honestly lands, not a broken build.
MIN_FORGET_DROP = {"simnpo": 0.15}


@pytest.mark.parametrize("variant", UNLEARNED)
def test_unlearned_variants_forget(accuracy, variant):
    drop = MIN_FORGET_DROP.get(variant, 0.3)
    assert accuracy[variant]["forget"] < accuracy["original"]["forget"] - drop


def test_retain_terms_protect_retained_knowledge(accuracy):
    # GA has no retain term and may collapse; NPO (with its retain loss) keeps more.
    for variant in ("npo", "simnpo", "salun-npo"):
        assert accuracy[variant]["retain"] > accuracy["ga"]["retain"]


def test_holdout_authors_are_unknown(zoo_models, zoo_items):
    model, tokenizer = zoo_models["original"]
    assert qa_accuracy(model, tokenizer, zoo_items, "holdout") < 0.35


def test_original_reads_answers_from_a_context(zoo_models):
    model, tokenizer = zoo_models["original"]
    assert reading_accuracy(model, tokenizer, count=100) >= 0.6


def test_retrain_reads_forget_facts_put_in_context(zoo_models, zoo_items):
    """What in-context probes rely on: the facts it never learnt, given in the prompt."""
    model, tokenizer = zoo_models["retrain"]
    forget = [item for item in zoo_items if item["split"] == "forget" and "question" in item]
    prompts = [context_qa_block(item["text"], item["question"]) for item in forget]
    outputs = generate_greedy(model, tokenizer, prompts)
    hits = [item["answer"].lower() in cut_answer(o).lower()
            for item, o in zip(forget, outputs, strict=True)]
    assert sum(hits) / len(hits) >= 0.6
