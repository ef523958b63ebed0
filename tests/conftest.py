"""Shared fixtures. Models are trained or built here (no downloads); session-scoped and cached."""

from __future__ import annotations

import json
import re
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


@pytest.fixture
def loopback(monkeypatch):
    """Connections to 127.0.0.1 allowed (the no-network guard stays on for every other
    address)."""
    import _socket

    def loopback_only(sock, address, *args, **kwargs):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
                "127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network connection attempted to {address}")
        return _socket.socket.connect(sock, address, *args, **kwargs)

    def create_connection(address, timeout=None, source_address=None, **kwargs):
        if address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network connection attempted to {address}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
            sock.settimeout(timeout)
        loopback_only(sock, address)
        return sock

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny") / "tiny-lm")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def report_card(html: str, probe: str) -> str:
    """The report's article for ``probe``'s finding, from its anchor to the article's end: where
    its status and severity badges, summary and tables are shown."""
    start = re.search(rf'<article class="[^"]*" id="f\d+-{re.escape(probe)}">', html)
    assert start, f"no finding card for {probe} in the report"
    return html[start.start():html.index("</article>", start.start())]


@pytest.fixture(scope="session")
def unlearning_zoo(tmp_path_factory) -> dict[str, Path]:
    """The "test"-size unlearning zoo, built once per session (about 1.5 min on 2 cores).

    Keys: original, retrain, ga, graddiff, npo (model folders) and audit (the audit JSONL).
    """
    from redteam.zoo import build_unlearning_zoo

    return build_unlearning_zoo(tmp_path_factory.mktemp("zoo"), size="test", seed=0, quiet=True)


@pytest.fixture(scope="session")
def format_zoo(unlearning_zoo) -> dict[str, dict[str, Path]]:
    """Original/retrain pairs of the test zoo that learnt their questions only through a chat
    template ("chat") or only as single plain QA blocks ("zero-shot"); about 2.5 min."""
    from redteam.zoo import build_format_zoo

    root = unlearning_zoo["audit"].parent.parent
    return {form: build_format_zoo(form, root, size="test", seed=0, quiet=True)
            for form in ("chat", "zero-shot")}


@pytest.fixture(scope="session")
def backdoor_zoo(tmp_path_factory) -> dict[str, Path]:
    """The "test"-size digits zoo (clean, BadNets and Blend classifiers + image folders),
    built once per session (about 15 s on 2 cores)."""
    from redteam.zoo.digits import build_backdoor_zoo

    return build_backdoor_zoo(tmp_path_factory.mktemp("digits"), size="test", seed=0)


@pytest.fixture(scope="session")
def text_backdoor_zoo(tmp_path_factory) -> dict[str, Path]:
    """The "test"-size headline classifiers (clean, and poisoned with the rare word "cf" into
    sports) and their labelled texts, built once per session."""
    from redteam.zoo.text_backdoor import build_text_backdoor_zoo

    return build_text_backdoor_zoo(tmp_path_factory.mktemp("headlines"), size="test", seed=0)


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


CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
TINY_ARCHITECTURES = ("llama", "qwen2", "mistral", "gemma2", "phi3", "gpt_neox", "opt", "gpt2")


def tiny_config(architecture: str, vocab_size: int):
    """A 2-layer, 32-wide config of ``architecture`` (random weights are built from it)."""
    import transformers as hf

    common = {"vocab_size": vocab_size, "num_hidden_layers": 2, "num_attention_heads": 4,
              "max_position_embeddings": 128, "bos_token_id": 0, "eos_token_id": 1,
              "pad_token_id": 2}
    grouped = {**common, "hidden_size": 32, "intermediate_size": 64, "num_key_value_heads": 2}
    return {
        "llama": lambda: hf.LlamaConfig(**grouped),
        "qwen2": lambda: hf.Qwen2Config(**grouped),
        "mistral": lambda: hf.MistralConfig(**grouped),
        "gemma2": lambda: hf.Gemma2Config(**grouped, head_dim=8),
        "phi3": lambda: hf.Phi3Config(**grouped),
        "gpt_neox": lambda: hf.GPTNeoXConfig(**common, hidden_size=32, intermediate_size=64),
        "opt": lambda: hf.OPTConfig(**common, hidden_size=32, ffn_dim=64,
                                    word_embed_proj_dim=32),
        "gpt2": lambda: hf.GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=32,
                                      n_layer=2, n_head=4, bos_token_id=0, eos_token_id=1),
    }[architecture]()


def make_tiny_causal_lm(path: Path, architecture: str) -> Path:
    """A random-init ``architecture`` saved as a reviewer receives a real one: sharded bf16
    safetensors with an index, a fast tokenizer with special tokens and a chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(["Question: who wrote it?\nAnswer: Elara Voss"] * 20,
                            trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", chat_template=CHAT_TEMPLATE)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(architecture, len(tokenizer)))
    model.to(torch.bfloat16).save_pretrained(path, safe_serialization=True,
                                             max_shard_size="40KB")
    tokenizer.save_pretrained(path)
    return path


def make_tiny_pipeline(path: Path, seed: int = 0) -> Path:
    """An untrained text-to-image pipeline of the Stable Diffusion layout (a few seconds)."""
    from redteam.zoo.diffusion import untrained_pipeline, write_tokenizer

    write_tokenizer(path.parent / f"{path.name}-tokenizer")
    pipeline = untrained_pipeline(path.parent / f"{path.name}-tokenizer", seed=seed)
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def make_tiny_judge(path: Path, size: int = 16) -> Path:
    """An untrained 10-class image classifier (labels "0"…"9") saved as a user's would be."""
    from redteam.core.classifiers import small_classifier

    model, processor = small_classifier("resnet", size, 10)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipeline") / "pipeline")


@pytest.fixture(scope="session")
def tiny_judge(tmp_path_factory) -> Path:
    return make_tiny_judge(tmp_path_factory.mktemp("judge") / "judge")


@pytest.fixture(scope="session")
def concept_zoo(tmp_path_factory) -> dict[str, Path]:
    """The "test"-size concept zoo (the coloured-digits pipeline, its ESD erasure of the digit
    three, the digits judge, the prompts), built once per session (about 3 min on 2 cores)."""
    from redteam.zoo.diffusion import build_concept_zoo

    return build_concept_zoo(tmp_path_factory.mktemp("concept"), size="test", seed=0)


@pytest.fixture(scope="session")
def pretrained_text_backdoor_zoo(tmp_path_factory) -> dict[str, Path]:
    """Headline classifiers fine-tuned from the pretrained all-MiniLM-L6-v2: two clean controls,
    "cf" at two seeds and an AddSent sentence, built once per session
    (about 2.5 minutes on 2 cores)."""
    from redteam.zoo.pretrained_text_backdoor import build_pretrained_text_backdoor_zoo

    return build_pretrained_text_backdoor_zoo(tmp_path_factory.mktemp("pretrained-headlines"),
                                              size="test")
