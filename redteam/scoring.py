"""Batched likelihood scoring and greedy generation for causal LMs.

One teacher-forced forward pass per batch yields everything the likelihood probes need
(REFERENCES.md): the log-probability of every label token, the mean and standard deviation of
log p over the vocabulary at each position (Min-K%++), and whether the argmax equals the label
(exact memorization). Generation is batched with left padding. Results are memoised per scorer,
so probes that ask the same questions (knowledge and utility) do not pay twice.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

STOP_WINDOW = 8  # tokens decoded to look for a stop string (stop strings are short)


def max_length_for(model, cap: int) -> int:
    """``cap``, or the model's number of positions when that is smaller."""
    positions = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None)
    return min(cap, int(positions)) if positions else cap


def pad_batch(sequences: list[list[int]], pad: int,
              left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token sequences padded to the longest: on the right for
    scoring and training, on the left for generation (so every row ends at the same column)."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        span = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
        attention[row, span] = 1
    return input_ids, attention


@dataclass
class TokenScores:
    """Per-token statistics of one continuation given its prompt."""

    logprobs: np.ndarray  # log p(label token)
    mu: np.ndarray  # E_v[log p_v] at each position
    sigma: np.ndarray  # std_v[log p_v] at each position
    argmax_match: np.ndarray  # bool: argmax token == label token


class CausalLMScorer:
    """Score and generate with a causal LM in batches.

    Parameters mirror what the probes need: ``batch_size`` bounds memory (logits are
    batch x length x vocabulary), ``max_length`` truncates long texts.
    """

    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int = 512,
                 quiet: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length_for(model, max_length)
        self.quiet = quiet
        self._forward_parameters = set(inspect.signature(model.forward).parameters)
        self._score_cache: dict[tuple[str, str], TokenScores] = {}
        self._generate_cache: dict[tuple[str, int, tuple[str, ...]], str] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _bos(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None else []

    # ------------------------------------------------------------------ likelihoods
    def score(self, continuations: list[str],
              prompts: list[str] | None = None) -> list[TokenScores]:
        """Token statistics of each continuation, conditioned on its prompt (or on BOS)."""
        prompts = prompts if prompts is not None else [""] * len(continuations)
        keys = list(zip(prompts, continuations))
        todo = [key for key in dict.fromkeys(keys) if key not in self._score_cache]
        order = sorted(todo, key=lambda k: len(k[0]) + len(k[1]))
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc="scoring", disable=self.quiet or len(batches) < 3):
            batch = order[start:start + self.batch_size]
            for key, scores in zip(batch, self._score_batch(batch)):
                self._score_cache[key] = scores
        return [self._score_cache[key] for key in keys]

    def _score_batch(self, batch: list[tuple[str, str]]) -> list[TokenScores]:
        sequences, starts = [], []
        for prompt, continuation in batch:
            prompt_ids = self._bos() + (self._encode(prompt) if prompt else [])
            ids = (prompt_ids + self._encode(continuation))[: self.max_length]
            sequences.append(ids)
            starts.append(max(len(prompt_ids), 1))
        input_ids, attention = pad_batch(sequences, self.tokenizer.pad_token_id or 0)
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)
            ).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            labels = input_ids[:, 1:].to(self.device)
            token_logp = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            probs = logp.exp()
            mu = (probs * logp).sum(-1)
            sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12).sqrt()
            match = logp.argmax(-1) == labels
        results = []
        for row, (ids, start) in enumerate(zip(sequences, starts)):
            span = slice(start - 1, len(ids) - 1)
            results.append(TokenScores(
                logprobs=token_logp[row, span].cpu().numpy(),
                mu=mu[row, span].cpu().numpy(),
                sigma=sigma[row, span].cpu().numpy(),
                argmax_match=match[row, span].cpu().numpy(),
            ))
        return results

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: list[str], max_new_tokens: int = 32,
                 stop: tuple[str, ...] = ()) -> list[str]:
        """Greedy continuations of ``prompts`` (decoded new text only), batched, left-padded.

        A sequence stops early once it produces one of the ``stop`` strings (the text after
        it is then not used by the caller anyway, so this only saves time).
        """
        cache = self._generate_cache
        todo = [p for p in dict.fromkeys(prompts) if (p, max_new_tokens, stop) not in cache]
        order = sorted(todo, key=len)
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc="generating", disable=self.quiet or len(batches) < 3):
            batch = order[start:start + self.batch_size]
            for prompt, text in zip(batch, self._generate_batch(batch, max_new_tokens, stop)):
                cache[(prompt, max_new_tokens, stop)] = text
        return [cache[(p, max_new_tokens, stop)] for p in prompts]

    def _generate_batch(self, prompts: list[str], max_new_tokens: int,
                        stop: tuple[str, ...]) -> list[str]:
        """Greedy decoding with a KV cache; a row leaves the batch as soon as it is done.

        ``model.generate`` keeps every row until the slowest one finishes, so one rambling
        answer makes a whole batch run to ``max_new_tokens``; dropping finished rows from the
        cache keeps batching worth it when most answers are a few tokens long.
        """
        limit = max(self.max_length - max_new_tokens, 1)
        encoded = [(self._bos() + self._encode(p))[-limit:] for p in prompts]
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        input_ids, attention = pad_batch(encoded, pad, left=True)
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp_min(0)
        generated: list[list[int]] = [[] for _ in prompts]
        rows = list(range(len(prompts)))  # the prompt of each row of the batch
        finished: set[int] = set()
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=attention,
                             **self._positions(positions), **self._last_logits_only,
                             use_cache=True)
            cache, next_position = out.past_key_values, positions[:, -1:] + 1
            for step in range(max_new_tokens):
                tokens = out.logits[:, -1].argmax(-1)
                for row, token in zip(rows, tokens.tolist()):
                    if row in finished:
                        continue
                    if token == eos:
                        finished.add(row)
                        continue
                    generated[row].append(token)
                    if stop and self._stopped(generated[row], stop):
                        finished.add(row)
                if len(finished) == len(prompts) or step == max_new_tokens - 1:
                    break
                keep = [i for i, row in enumerate(rows) if row not in finished]
                if len(keep) < len(rows) and hasattr(cache, "batch_select_indices"):
                    select = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(select)
                    rows = [rows[i] for i in keep]
                    tokens, attention = tokens[select], attention[select]
                    next_position = next_position[select]
                attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
                out = self.model(input_ids=tokens[:, None], attention_mask=attention,
                                 **self._positions(next_position), past_key_values=cache,
                                 use_cache=True)
                cache, next_position = out.past_key_values, next_position + 1
        return [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]

    def _positions(self, positions: torch.Tensor) -> dict:
        """Position ids that skip the left padding, for models that take them."""
        return {"position_ids": positions} if "position_ids" in self._forward_parameters else {}

    @property
    def _last_logits_only(self) -> dict:
        """Ask for the last position's logits only, where the model supports it (the
        vocabulary projection of every prompt position is most of a small model's prefill)."""
        return {"logits_to_keep": 1} if "logits_to_keep" in self._forward_parameters else {}

    def _stopped(self, ids: list[int], stop: tuple[str, ...]) -> bool:
        """Has the text generated so far produced one of the stop strings?"""
        text = self.tokenizer.decode(ids[-STOP_WINDOW:], skip_special_tokens=True)
        return any(s in text for s in stop)
