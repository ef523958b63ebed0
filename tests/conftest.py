"""Shared fixtures. Models are trained or built here (no downloads); session-scoped and cached."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

import redteam  # noqa: F401  (switches the hub off before any Hugging Face import)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The tool never opens a network connection: any attempt fails the test."""

    real_connect = socket.socket.connect

    def guarded_connect(sock, address, *args, **kwargs):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network connection attempted to {address}")
        return real_connect(sock, address, *args, **kwargs)

    def refuse(address, *args, **kwargs):
        raise AssertionError(f"network connection attempted to {address}")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", refuse)


def make_tiny_lm(path: Path, safetensors: bool = True) -> Path:
    """A randomly initialised 2-layer GPT-2 with a small BPE tokenizer, saved as an HF folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(["Question: who wrote it?\nAnswer: Elara Voss"] * 20, trainer)
    from tokenizers import decoders

    raw.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2,
                        n_head=2, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)  # the same random model whichever tests ran before
    model = GPT2LMHeadModel(config)
    model.save_pretrained(path, safe_serialization=safetensors)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny") / "tiny-lm")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def unlearning_zoo(tmp_path_factory) -> dict[str, Path]:
    """The "test"-size unlearning zoo, built once per session (about 1.5 min on 2 cores).

    Keys: original, retrain, ga, graddiff, npo (model folders) and audit (the audit JSONL).
    """
    from redteam.zoo import build_unlearning_zoo

    return build_unlearning_zoo(tmp_path_factory.mktemp("zoo"), size="test", seed=0, quiet=True)


@pytest.fixture(scope="session")
def backdoor_zoo(tmp_path_factory) -> dict[str, Path]:
    """The "test"-size digits zoo (clean, BadNets and Blend classifiers + image folders),
    built once per session (about 15 s on 2 cores)."""
    from redteam.zoo.digits import build_backdoor_zoo

    return build_backdoor_zoo(tmp_path_factory.mktemp("digits"), size="test", seed=0)


@pytest.fixture(scope="session")
def protection_zoo(tmp_path_factory) -> dict[str, Path]:
    """The "test"-size Unlearnable Clusters demo data (surrogate model, digits to publish, test
    digits), built once per session (a few seconds)."""
    from redteam.zoo.protection import build_protection_zoo

    return build_protection_zoo(tmp_path_factory.mktemp("protection"), size="test", seed=0)


@pytest.fixture(scope="session")
def visu_zoo(tmp_path_factory) -> dict[str, Path]:
    """The "test"-size HySAC demo (ViSU-style digit quadruplets, the tiny base CLIP and its
    HySAC version), built once per session (about 25 s on 2 cores)."""
    from redteam.zoo.visu import build_visu_zoo

    return build_visu_zoo(tmp_path_factory.mktemp("visu"), size="test", seed=0)
