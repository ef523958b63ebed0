"""Adversarial typos against text classifiers (DeepWordBug, Pruthi et al.) through TextAttack,
offline, on tiny BERT classifiers trained here.

Two models, both 2-layer BERTs with a WordPiece tokenizer trained on generated sentences:
- ``sentiment``: negative / neutral / positive, decided by 1-3 keywords ("superb", "dreadful")
  among filler words. One typo in the keyword leaves the model blind to it: fragile.
- ``negation``: affirmed / negated, decided by the stopword "not" (which the recipes never edit),
  trained with random typos in the filler words: it should shrug the attacks off.
"""

from __future__ import annotations

import json
import os
import random
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from redteam.cli import main
from redteam.core.errors import InputError
from redteam.core.severity import severity_of
from redteam.core.text_data import load_labelled_texts
from redteam.engine import AuditRequest, run_audit
from redteam.targets import detect_kind, load_target

POSITIVE = ["excellent", "wonderful", "superb", "brilliant", "delightful", "marvelous"]
NEGATIVE = ["terrible", "dreadful", "horrible", "awful", "miserable", "pathetic"]
FILLER = ["movie", "story", "actors", "music", "camera", "script", "ending", "scenes",
          "dialogue", "characters", "director", "costumes", "lighting", "plot", "cast"]
TASKS = {"sentiment": ["negative", "neutral", "positive"], "negation": ["affirmed", "negated"]}
CHARACTER_PROBES = ["adversarial.deepwordbug", "adversarial.pruthi"]
DOWNLOADS = {"adversarial.textfooler": "counter-fitted word embeddings",
             "adversarial.pwws": "WordNet", "adversarial.bert_attack": "bert-base-uncased",
             "adversarial.bae": "bert-base-uncased", "adversarial.a2t": "stsb-distilbert-base",
             "adversarial.textbugger": "Universal Sentence Encoder"}


def typo(rng: random.Random, word: str) -> str:
    """One random character edit: deletion, insertion, substitution or neighbour swap."""
    i, op = rng.randrange(len(word)), rng.randrange(4)
    letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
    if op == 0:
        return word[:i] + word[i + 1:]
    if op == 1:
        return word[:i] + letter + word[i:]
    if op == 2:
        return word[:i] + letter + word[i + 1:]
    chars = list(word)
    j = min(i + 1, len(word) - 1)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def sentence(rng: random.Random, task: str, label: int, noise: float = 0.0) -> str:
    words = [typo(rng, w) if rng.random() < noise else w
             for w in rng.sample(FILLER, rng.randint(4, 7))]
    if task == "sentiment" and label != 1:
        for keyword in rng.sample(POSITIVE if label == 2 else NEGATIVE, rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), keyword)
    if task == "negation" and label == 1:
        words.insert(rng.randrange(1, len(words)), "not")
    return " ".join(words)


def build_text_classifier(path: Path, task: str, noise: float = 0.0, seed: int = 0) -> Path:
    """Train a 2-layer BERT on ``task`` (a few seconds), save it as an HF folder (safetensors)
    with ``audit.jsonl``: 36 held-out texts, labels given as names and as ids alternately."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    labels = TASKS[task]
    rng = random.Random(seed)
    ys = [rng.randrange(len(labels)) for _ in range(600)]
    texts = [sentence(rng, task, y, noise) for y in ys]
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    raw.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200,
                                                             special_tokens=special))
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={name: i for i, name in enumerate(labels)})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    targets = torch.tensor(ys)
    model.train()
    for epoch in range(10):
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(texts), 32):
            batch = order[start:start + 32]
            inputs = tokenizer([texts[i] for i in batch], padding=True, return_tensors="pt")
            loss = model(**inputs, labels=targets[batch]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    rows = []
    for index in range(36):
        label = index % len(labels)
        rows.append({"text": sentence(rng, task, label),
                     "label": labels[label] if index % 2 else label})
    (path / "audit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def forbid_network(patch: pytest.MonkeyPatch) -> None:
    """The conftest's guard, for module-scoped fixtures (it only covers test functions)."""

    def refuse(address, *args, **kwargs):
        raise AssertionError(f"network connection attempted to {address}")

    patch.setattr(socket.socket, "connect", lambda sock, address, *a, **k: refuse(address))
    patch.setattr(socket, "create_connection", refuse)


def audit(model: Path, out: Path, probes=None, settings=None, seed: int = 0):
    with pytest.MonkeyPatch.context() as patch:
        forbid_network(patch)
        return run_audit(AuditRequest(model=model, suite="adversarial", data=model / "audit.jsonl",
                                      out=out, probes=probes, device="cpu", seed=seed, quiet=True,
                                      settings=settings or {}))


def by_probe(result) -> dict:
    return {f.probe: f for f in result.findings}


@pytest.fixture(scope="module")
def sentiment_model(tmp_path_factory) -> Path:
    return build_text_classifier(tmp_path_factory.mktemp("text") / "sentiment", "sentiment")


@pytest.fixture(scope="module")
def negation_model(tmp_path_factory) -> Path:
    return build_text_classifier(tmp_path_factory.mktemp("text") / "negation", "negation",
                                 noise=0.5)


@pytest.fixture(scope="module")
def sentiment_run(sentiment_model, tmp_path_factory):
    return audit(sentiment_model, tmp_path_factory.mktemp("runs") / "sentiment")


@pytest.fixture(scope="module")
def negation_run(negation_model, tmp_path_factory):
    return audit(negation_model, tmp_path_factory.mktemp("runs") / "negation",
                 probes=CHARACTER_PROBES)


# ---------------------------------------------------------------- loading
def test_text_classifier_is_detected_and_loaded_safely(sentiment_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    assert detect_kind(sentiment_model) == "text-classifier"
    target = load_target(sentiment_model)
    assert target.kind == "text-classifier"
    assert type(target.model).__name__ == "BertForSequenceClassification"
    assert not target.model.training
    assert "model.safetensors" in target.files and "tokenizer.json" in target.files
    inputs = target.tokenizer(["a superb movie", "a dreadful plot"], padding=True,
                              return_tensors="pt")
    assert target.model(**inputs).logits.argmax(-1).tolist() == [2, 0]

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        (pickled / name).write_bytes((sentiment_model / name).read_bytes())
    torch.save(load_file(sentiment_model / "model.safetensors"), pickled / "pytorch_model.bin")
    with pytest.raises(InputError, match="only pickle weights"):
        load_target(pickled)
    unpickled = load_target(pickled, allow_pickle=True)
    assert unpickled.model(**inputs).logits.argmax(-1).tolist() == [2, 0]


def test_gpt_style_classifier_without_pad_token_gets_one(tmp_path):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(["a superb movie", "a dreadful plot"] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1,
                        n_head=2, num_labels=2)
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "gpt")
    tokenizer.save_pretrained(tmp_path / "gpt")
    target = load_target(tmp_path / "gpt")
    assert target.kind == "text-classifier"
    assert target.model.config.pad_token_id == target.tokenizer.pad_token_id is not None
    inputs = target.tokenizer(["a superb movie", "a plot"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert target.model(**inputs).logits.shape == (2, 2)


def test_labelled_texts_accept_label_names_and_ids(sentiment_model):
    data = load_labelled_texts(sentiment_model / "audit.jsonl",
                               {"negative": 0, "neutral": 1, "positive": 2})
    assert len(data) == 36
    assert data.labels[:6] == [0, 1, 2, 0, 1, 2]  # 0 and 2 given as ids, 1 as a name
    assert data.items[4].line == 5 and data.texts[4] == data.items[4].text


@pytest.mark.parametrize(("line", "message"), [
    ('{"text": "a superb movie", "label": "positive"', "2: not valid JSON"),
    ('["a superb movie", "positive"]', "2: expected a JSON object"),
    ('{"label": "positive"}', "2: text: missing"),
    ('{"text": "a superb movie"}', "2: label: missing"),
    ('{"text": 3, "label": "positive"}', "2: text: expected a string"),
    ('{"text": "  ", "label": "positive"}', "2: text: empty"),
    ('{"text": "a superb movie", "label": "great"}', "2: label: 'great' is not a label"),
    ('{"text": "a superb movie", "label": 7}', "2: label: 7 is not a label"),
    ('{"text": "a superb movie", "label": true}', "2: label: expected a label name or id"),
    ('{"text": "a superb movie", "label": 2, "lang": "en"}', "2: lang: unknown field"),
])
def test_bad_labelled_texts_exit_2_with_file_line_and_field(capsys, sentiment_model, tmp_path,
                                                              line, message):
    data = tmp_path / "texts.jsonl"
    data.write_text('{"text": "a dreadful plot", "label": "negative"}\n' + line + "\n")
    out = tmp_path / "run"
    code = main(["audit", str(sentiment_model), "--suite", "adversarial", "--data", str(data),
                 "--out", str(out), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{data}:{message}" in err
    assert not out.exists()


def test_empty_labelled_texts_file_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no labelled texts"):
        load_labelled_texts(tmp_path / "empty.jsonl", {"a": 0})


# ---------------------------------------------------------------- attacks
@pytest.mark.parametrize("probe", CHARACTER_PROBES)
def test_typos_flip_the_keyword_model(sentiment_run, sentiment_model, probe):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert sentiment_run.exit_code == 1
    finding = by_probe(sentiment_run)[probe]
    details = finding.details
    assert finding.status == "fail"
    assert finding.severity == severity_of(finding.metric) in ("high", "critical")
    assert finding.metric.name.startswith("attack success rate")
    assert finding.metric.threshold == 0.5
    assert finding.metric.ci95[0] <= finding.metric.value <= finding.metric.ci95[1]
    asr = details["attack_success_rate"]  # over all labels; the metric is the worst label's
    assert 0.5 < asr <= finding.metric.value
    assert details["clean_accuracy"] >= 0.9
    assert details["accuracy_under_attack"] == pytest.approx(
        details["clean_accuracy"] * (1 - asr), abs=1e-3)
    assert details["texts"] == 36
    assert details["texts_attacked"] == details["succeeded"] + details["failed"]
    assert details["succeeded"] == round(asr * details["texts_attacked"])
    assert 0 < details["avg_words_perturbed"] <= 1 and details["avg_queries"] > 1
    assert len(details["per_item"]) == details["texts_attacked"]
    by_label = details["tables"]["Attack success per original label"]
    assert sum(row["attacked"] for row in by_label) == details["texts_attacked"]
    assert sum(row["flipped"] for row in by_label) == details["succeeded"]
    assert finding.metric.value == max([asr] + [row["success_rate"] for row in by_label
                                                if row["attacked"] >= 5])
    assert finding.references and any("arXiv:2005.05909" in r for r in finding.references)

    # Every evidence row is a real adversarial example: the model gives the new label.
    model = AutoModelForSequenceClassification.from_pretrained(sentiment_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(sentiment_model)
    names = model.config.id2label
    assert len(finding.evidence) == min(details["succeeded"], 20)
    for row in finding.evidence:
        before, after = row.expected.split(" → ")
        assert before != after and row.input != row.output
        changed = [a != b for a, b in zip(row.input.split(), row.output.split())]
        assert len(row.input.split()) == len(row.output.split()) and 1 <= sum(changed)
        inputs = tokenizer([row.input, row.output], padding=True, return_tensors="pt")
        predicted = model(**inputs).logits.argmax(-1).tolist()
        assert [names[p] for p in predicted] == [before, after]
    if probe == "adversarial.pruthi":
        assert details["max_words"] == 1
        assert all(r["words perturbed"] * len(r["perturbed"].split()) < 1.01
                   for r in details["per_item"])


def test_run_writes_report_with_the_attack_metrics(sentiment_run):
    document = json.loads((sentiment_run.out_dir / "findings.json").read_text())
    assert document["run"]["target"]["kind"] == "text-classifier"
    assert "data" in document["run"]["inputs"]
    html = (sentiment_run.out_dir / "report.html").read_text()
    assert "attack success rate" in html and "DeepWordBug" in html
    assert "accuracy_under_attack" in html and "→" in html


def test_recipes_that_need_downloads_are_skipped_with_the_reason(sentiment_run):
    findings = by_probe(sentiment_run)
    for probe, download in DOWNLOADS.items():
        assert findings[probe].status == "skipped"
        assert download in findings[probe].summary
        assert "never opens a network connection" in findings[probe].summary


def test_model_robust_to_the_edited_words_survives(negation_run, sentiment_run):
    fragile, robust = by_probe(sentiment_run), by_probe(negation_run)
    assert negation_run.exit_code == 0
    for probe in CHARACTER_PROBES:
        assert robust[probe].details["clean_accuracy"] >= 0.9
        assert robust[probe].details["texts_attacked"] >= 30
        assert robust[probe].metric.value <= 0.2 < fragile[probe].metric.value
        assert robust[probe].status == "pass" and not robust[probe].evidence


def test_pruthi_success_rises_with_the_word_budget(sentiment_model, sentiment_run, tmp_path):
    one_word = by_probe(sentiment_run)["adversarial.pruthi"]
    run = audit(sentiment_model, tmp_path / "run", probes=["adversarial.pruthi"],
                settings={"adversarial.pruthi": {"max_words": 3}})
    three_words = by_probe(run)["adversarial.pruthi"]
    assert three_words.details["max_words"] == 3
    assert three_words.details["texts_attacked"] == one_word.details["texts_attacked"]
    assert (three_words.details["attack_success_rate"]
            > one_word.details["attack_success_rate"])
    # more texts flip, and the extra ones needed more than one word
    assert any(r["words perturbed"] * len(r["perturbed"].split()) > 1.5
               for r in three_words.details["per_item"] if r["outcome"] == "succeeded")


def test_attack_is_deterministic_under_the_seed(sentiment_model, tmp_path):
    settings = {"adversarial.deepwordbug": {"max_examples": 12}}
    runs = [audit(sentiment_model, tmp_path / f"run{i}", probes=["adversarial.deepwordbug"],
                  settings=settings) for i in range(2)]
    first, second = (by_probe(r)["adversarial.deepwordbug"] for r in runs)
    assert first.details["texts_attacked"] == 12
    assert first.details["per_item"] == second.details["per_item"]


# ---------------------------------------------------------------- offline, outside the home
def test_cache_dir_made_by_someone_else_is_not_used(tmp_path, monkeypatch):
    from redteam.core.textattack_env import cache_dir

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    shared = tmp_path / f"redteam-textattack-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    chosen = cache_dir()
    assert chosen != shared and chosen.parent == tmp_path
    assert not chosen.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    shared.chmod(0o700)
    assert cache_dir() == shared


CHILD = """
import os, socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("network connection attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
import redteam
before = dict(os.environ)
from redteam.probes.text_adversarial import DeepWordBug, Pruthi, model_wrapper
from redteam.targets import load_target
target = load_target(sys.argv[1])
for probe in (DeepWordBug(), Pruthi()):
    attack = probe.build(model_wrapper(target))
    result = attack.attack("the superb movie", 2)
    print(type(result).__name__)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print("changed:", changed)
"""


def test_textattack_runs_offline_and_writes_nothing_under_home(sentiment_model, tmp_path):
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(temp), "OMP_NUM_THREADS": "1"}
    for name in ("TA_CACHE_DIR", "NLTK_DATA", "HF_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
        env.pop(name, None)
    child = subprocess.run([sys.executable, "-c", CHILD, str(sentiment_model)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.count("SuccessfulAttackResult") == 2
    assert "changed: []" in child.stdout  # HF_HOME, XDG_CACHE_HOME, ... put back
    assert not (home / ".cache" / "textattack").exists()
    assert not (home / "nltk_data").exists()
    assert [p for p in home.rglob("*") if p.is_file()] == []
    cache = temp / f"redteam-textattack-{os.getuid()}"
    assert (cache / "post_install_check_3").is_file()
    assert "the" in (cache / "corpora" / "stopwords" / "english").read_text().split()
