"""A causal LM behind an OpenAI-compatible endpoint, seen through the same two questions the
in-process scorer answers: how likely is this continuation, and what does the model say.

What the server offers is found by asking (``discover``), never assumed: plain completions,
``echo`` with ``logprobs`` (the log-probability of every prompt token, which the likelihood
probes need), vLLM's ``/tokenize`` and ``/detokenize`` (the served tokenizer, and through it the
server's own chat template), a ``seed``, chat completions. Each probe declares what of the
model it uses (``Probe.model_access``); the engine skips a probe the endpoint cannot serve and
names what is missing.

Scoring sends token ids when the server tokenizes: BOS (where the tokenizer has one), then the
prompt's and the continuation's ids, encoded apart as ``core.scoring`` encodes them, so that the
same tokens are scored as in process. Without ``/tokenize`` the text is sent and the
continuation's tokens are found by their text offsets. Two things the in-process scorer has
cannot be had over this API: the whole vocabulary's distribution at each position (Min-K%++'s
mean and spread; a server returns the top few log-probs only), and the weights.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from redteam.core.http import EndpointClient, EndpointError, RequestRefused
from redteam.core.scoring import TokenScores, encode_with_bos

# What of a model a probe may use; an in-process model gives all of it.
MODEL_ACCESS = {
    "weights": "the weights (hidden states, fine-tuning)",
    "generation": "generated text (completions)",
    "token_logprobs": "every prompt token's log-probability (completions with echo and "
                      "logprobs)",
    "vocabulary_distribution": "the whole vocabulary's distribution at each position",
    "tokenizer": "the served tokenizer (/tokenize and /detokenize)",
}
IN_PROCESS_ACCESS = frozenset(MODEL_ACCESS)

# Fixed prompts whose log-probs identify a served model's behaviour in the run record, since
# its weights cannot be hashed.
FINGERPRINT_TEXTS = (
    "The capital of France is Paris.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "def add(a, b):\n    return a + b",
    "Once upon a time there was a small village by the sea.",
)
FINGERPRINT_DECIMALS = 2


@dataclass
class Capabilities:
    """What ``discover`` found the endpoint to offer."""

    completions: bool = False
    echo_logprobs: bool = False
    tokenize: bool = False
    chat_template: bool = False
    seed: bool = False
    chat_completions: bool = False
    tokenizer_info: bool = False

    def access(self) -> frozenset[str]:
        """The ``MODEL_ACCESS`` entries these give."""
        offered = {"generation": self.completions, "token_logprobs": self.echo_logprobs,
                   "tokenizer": self.tokenize}
        return frozenset(name for name, ok in offered.items() if ok)

    def record(self) -> dict[str, bool]:
        return asdict(self)


def _offered(call) -> bool:
    """Does the server accept this request? (a 4xx says no; anything else is raised)"""
    try:
        call()
    except RequestRefused:
        return False
    return True


def _field(value: Any, path: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``value``'s ``path`` (dotted, with list indices), checked to be ``kind``."""
    node = value
    for part in path.split("."):
        try:
            node = node[int(part)] if part.isdigit() else node[part]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{where}: response lacks {path}") from None
    if not isinstance(node, kind):
        raise EndpointError(f"{where}: response's {path} is not a {_kind_name(kind)}")
    return node


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


@dataclass
class ServedModel:
    """A model an endpoint serves: its id, what ``/v1/models`` says of it, and its
    capabilities."""

    client: EndpointClient
    model_id: str
    listing: dict = field(default_factory=dict)
    capabilities: Capabilities = field(default_factory=Capabilities)
    tokenizer_info: dict = field(default_factory=dict)

    @classmethod
    def discover(cls, client: EndpointClient, model_id: str | None) -> ServedModel:
        """Ask ``/v1/models`` for the model, then find its capabilities with a few tiny
        requests (a greedy token each at most)."""
        listed = _field(client.get("/models"), "data", list, f"{client.base_url}/models")
        entries = {entry.get("id"): entry for entry in listed if isinstance(entry, dict)
                   and isinstance(entry.get("id"), str)}
        if model_id is None:
            if len(entries) != 1:
                raise EndpointError(f"{client.base_url}: serves {len(entries)} models "
                                    f"({', '.join(sorted(entries)[:8])}); name one with "
                                    "--served-model")
            model_id = next(iter(entries))
        if model_id not in entries:
            raise EndpointError(f"{client.base_url}: serves no model {model_id!r} (it serves "
                                f"{', '.join(sorted(entries)[:8]) or 'none'})")
        served = cls(client=client, model_id=model_id, listing=_plain(entries[model_id]))
        served.capabilities = served._find_capabilities()
        return served

    # ------------------------------------------------------------------ discovery
    def _completion(self, **body: Any) -> dict:
        return self.client.post("/completions", {"model": self.model_id, "temperature": 0,
                                                 **body}, cached=False)

    def _find_capabilities(self) -> Capabilities:
        found = Capabilities()
        found.completions = _offered(lambda: self._completion(prompt="Hello", max_tokens=1))
        if not found.completions:
            return found
        found.echo_logprobs = _offered(lambda: self._echo_check())
        found.seed = _offered(lambda: self._completion(prompt="Hello", max_tokens=1, seed=0))
        found.tokenize = _offered(lambda: self.tokenize("Hello", add_special_tokens=False))
        if found.tokenize:
            found.chat_template = _offered(lambda: self.tokenize_chat(
                [{"role": "user", "content": "Hello"}]))
            found.tokenizer_info = _offered(self._read_tokenizer_info)
        found.chat_completions = _offered(lambda: self.client.post(
            "/chat/completions", {"model": self.model_id, "max_tokens": 1, "temperature": 0,
                                  "messages": [{"role": "user", "content": "Hello"}]},
            cached=False))
        return found

    def _echo_check(self) -> None:
        where = f"{self.client.base_url}/completions (echo with logprobs)"
        response = self._completion(prompt="Hello world, hello", max_tokens=1, echo=True,
                                    logprobs=1)
        values = _field(response, "choices.0.logprobs.token_logprobs", list, where)
        if len(values) < 2:
            raise RequestRefused(f"{where}: no prompt log-probs echoed", 400)

    def _read_tokenizer_info(self) -> None:
        info = self.client.get("/tokenizer_info", root=True)
        if not isinstance(info, dict):
            raise EndpointError(f"{self.client.root_url}/tokenizer_info: not a JSON object")
        self.tokenizer_info = {k: v for k, v in info.items()
                               if k in ("bos_token", "eos_token", "pad_token", "tokenizer_class")
                               and isinstance(v, str)}

    # ------------------------------------------------------------------ tokenizer calls
    def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        response = self.client.post("/tokenize", {"model": self.model_id, "prompt": text,
                                                  "add_special_tokens": add_special_tokens},
                                    root=True)
        return _token_ids(response, f"{self.client.root_url}/tokenize")

    def tokenize_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        response = self.client.post("/tokenize", {
            "model": self.model_id, "messages": messages,
            "add_generation_prompt": add_generation_prompt}, root=True)
        return _token_ids(response, f"{self.client.root_url}/tokenize (chat)")

    def detokenize(self, ids: list[int]) -> str:
        response = self.client.post("/detokenize", {"model": self.model_id, "tokens": ids},
                                    root=True)
        return _field(response, "prompt", str, f"{self.client.root_url}/detokenize")

    @property
    def max_model_len(self) -> int | None:
        value = self.listing.get("max_model_len")
        return value if isinstance(value, int) and value > 0 else None

    def record(self) -> dict[str, Any]:
        """The served model as the run record names it: no credentials, nothing but what the
        server said and what was found."""
        return {"url": self.client.base_url, "served_model": self.model_id,
                "listing": self.listing, "capabilities": self.capabilities.record(),
                "tokenizer_info": self.tokenizer_info,
                "weights_seen": False}


def _plain(value: Any, depth: int = 0) -> Any:
    """A JSON value kept for the record, with strings cut to 200 characters."""
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, dict) and depth < 3:
        return {str(k)[:80]: _plain(v, depth + 1) for k, v in list(value.items())[:32]}
    if isinstance(value, list) and depth < 3:
        return [_plain(v, depth + 1) for v in value[:32]]
    return value if isinstance(value, int | float | bool) or value is None else None


def _token_ids(response: Any, where: str) -> list[int]:
    ids = _field(response, "tokens", list, where)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise EndpointError(f"{where}: response's tokens are not token ids")
    return ids


class ServedTokenizer:
    """The served model's tokenizer, through the server's ``/tokenize`` and ``/detokenize``:
    the calls the probes make of a Hugging Face tokenizer (encode, decode, the chat template),
    each answered by the server and remembered."""

    def __init__(self, served: ServedModel) -> None:
        self.served = served
        self._ids: dict[tuple[str, bool], list[int]] = {}
        self.chat_template = "(the server's)" if served.capabilities.chat_template else None
        self.bos_token, self.bos_token_id = self._special("bos_token")
        self.eos_token, self.eos_token_id = self._special("eos_token")
        self.pad_token_id = None

    def _special(self, name: str) -> tuple[str | None, int | None]:
        """A special token and its id, from ``/tokenizer_info`` where the server offers it;
        for BOS otherwise the id the tokenizer adds before an empty text, if any."""
        text = self.served.tokenizer_info.get(name)
        if text:
            ids = self.encode(text)
            return (text, ids[0]) if len(ids) == 1 else (None, None)
        if name == "bos_token":
            ids = self.served.tokenize("", add_special_tokens=True)
            if len(ids) == 1:
                return self.decode(ids), ids[0]
        return None, None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        key = (text, add_special_tokens)
        if key not in self._ids:
            self._ids[key] = self.served.tokenize(text, add_special_tokens) if text else []
        return self._ids[key]

    def __call__(self, text: str, add_special_tokens: bool = True, **_: Any) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids, skip_special_tokens: bool = False, **_: Any) -> str:
        """``ids`` as text, as the server's ``/detokenize`` gives it: with the special tokens
        (it takes no ``skip_special_tokens``), which the probes' data texts do not hold."""
        ids = [int(i) for i in ids]
        return self.served.detokenize(ids) if ids else ""

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False,
                            add_generation_prompt: bool = True, **_: Any) -> str | list[int]:
        """The server's chat template, rendered by the server (as ids, then as text)."""
        if not self.chat_template:
            raise EndpointError(f"{self.served.client.base_url}: the server applies no chat "
                                "template")
        ids = self.served.tokenize_chat(messages, add_generation_prompt)
        return ids if tokenize else self.decode(ids)


class ServedScorer:
    """``core.scoring.CausalLMScorer``'s ``score`` and ``generate`` over an endpoint: greedy,
    seeded where the server takes a seed, concurrent up to the client's ``concurrency``."""

    has_vocabulary_distribution = False

    def __init__(self, served: ServedModel, tokenizer: ServedTokenizer | None,
                 max_length: int = 512, quiet: bool = True) -> None:
        self.served = served
        self.tokenizer = tokenizer
        self.max_length = min(max_length, served.max_model_len or max_length)
        self.quiet = quiet
        self._scores: dict[tuple[str, str], TokenScores] = {}
        self._texts: dict[tuple[str, int, tuple[str, ...]], str] = {}

    @property
    def client(self) -> EndpointClient:
        return self.served.client

    def _body(self, prompt: str | list[int], **fields: Any) -> dict:
        body = {"model": self.served.model_id, "prompt": prompt, "temperature": 0, **fields}
        if self.served.capabilities.seed:
            body["seed"] = 0
        return body

    # ------------------------------------------------------------------ likelihoods
    def score(self, continuations: list[str],
              prompts: list[str] | None = None) -> list[TokenScores]:
        """Each continuation's token log-probs given its prompt (``mu`` and ``sigma``, which
        need the whole vocabulary, are NaN; ``argmax_match`` is from the top log-prob)."""
        if not self.served.capabilities.echo_logprobs:
            raise EndpointError(f"{self.client.base_url}: the server does not echo prompt "
                                "log-probs")
        prompts = prompts if prompts is not None else [""] * len(continuations)
        keys = list(zip(prompts, continuations))
        todo = [key for key in dict.fromkeys(keys) if key not in self._scores]
        self.client.quiet = self.quiet
        for key, scores in zip(todo, self.client.map(self._score_one, todo, "scoring")):
            self._scores[key] = scores
        return [self._scores[key] for key in keys]

    def _score_one(self, key: tuple[str, str]) -> TokenScores:
        prompt, continuation = key
        where = f"{self.client.base_url}/completions (echo)"
        if self.tokenizer is not None:
            prompt_ids = encode_with_bos(self.tokenizer, prompt)
            ids = (prompt_ids + self.tokenizer.encode(continuation))[: self.max_length]
            start, request = max(len(prompt_ids), 1), ids
        else:
            start, request = len(prompt), prompt + continuation
        response = self.client.post("/completions", self._body(request, max_tokens=1,
                                                               echo=True, logprobs=1))
        logprobs = _field(response, "choices.0.logprobs", dict, where)
        values = _field(logprobs, "token_logprobs", list, where)
        tops = _field(logprobs, "top_logprobs", list, where)
        if self.tokenizer is not None:
            values, tops = values[:len(request)], tops[:len(request)]
            positions = range(start, len(values))
        else:
            offsets = _field(logprobs, "text_offset", list, where)
            positions = [i for i, offset in enumerate(offsets[:len(values)])
                         if isinstance(offset, int) and start <= offset < len(request) and i > 0]
        return _token_scores([values[i] for i in positions], [tops[i] for i in positions],
                             where)

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: list[str], max_new_tokens: int = 32,
                 stop: tuple[str, ...] = ()) -> list[str]:
        """Greedy continuations of ``prompts`` (new text only); a generation ends at the
        model's end of sequence or at one of ``stop``."""
        todo = [p for p in dict.fromkeys(prompts) if (p, max_new_tokens, stop) not in self._texts]
        self.client.quiet = self.quiet
        texts = self.client.map(lambda p: self._generate_one(p, max_new_tokens, stop), todo,
                                "generating")
        for prompt, text in zip(todo, texts):
            self._texts[(prompt, max_new_tokens, stop)] = text
        return [self._texts[(p, max_new_tokens, stop)] for p in prompts]

    def _generate_one(self, prompt: str, max_new_tokens: int, stop: tuple[str, ...]) -> str:
        request: str | list[int] = prompt
        if self.tokenizer is not None:
            limit = max(self.max_length - max_new_tokens, 1)
            request = encode_with_bos(self.tokenizer, prompt)[-limit:]
        extra = {"stop": list(stop)} if stop else {}
        response = self.client.post("/completions", self._body(
            request, max_tokens=max_new_tokens, **extra))
        return _field(response, "choices.0.text", str, f"{self.client.base_url}/completions")


def _token_scores(values: list, tops: list, where: str) -> TokenScores:
    logprobs, matches = [], []
    for value, top in zip(values, tops):
        if not isinstance(value, int | float) or isinstance(value, bool) \
                or not math.isfinite(value):
            raise EndpointError(f"{where}: a prompt token's log-prob is {value!r}, not a number")
        best = [v for v in (top or {}).values() if isinstance(v, int | float)]
        logprobs.append(float(value))
        matches.append(bool(best) and value >= max(best) - 1e-6)
    count = len(logprobs)
    return TokenScores(logprobs=np.array(logprobs, dtype=np.float32),
                       mu=np.full(count, np.nan, dtype=np.float32),
                       sigma=np.full(count, np.nan, dtype=np.float32),
                       argmax_match=np.array(matches, dtype=bool))


def behavioural_fingerprint(scorer: ServedScorer) -> dict[str, Any]:
    """The SHA-256 of the served model's log-probs of ``FINGERPRINT_TEXTS`` rounded to
    ``FINGERPRINT_DECIMALS`` decimals: the same served model gives the same digest, a changed
    one almost surely another (it stands in for the weights' hashes, which cannot be had)."""
    if not scorer.served.capabilities.echo_logprobs:
        return {"sha256": None, "reason": "the server does not echo prompt log-probs"}
    values = [np.round(s.logprobs.astype(np.float64), FINGERPRINT_DECIMALS).tolist()
              for s in scorer.score(list(FINGERPRINT_TEXTS))]
    digest = hashlib.sha256(json.dumps(values).encode()).hexdigest()
    return {"sha256": digest, "texts": len(FINGERPRINT_TEXTS),
            "decimals": FINGERPRINT_DECIMALS}
