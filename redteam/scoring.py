"""Batched likelihood scoring and greedy generation for causal LMs.

One teacher-forced forward pass per batch yields everything the likelihood probes need
(REFERENCES.md): the log-probability of every label token, the mean and standard deviation of
log p over the vocabulary at each position (Min-K%++), and whether the argmax equals the label
(exact memorization). Generation is batched with left padding. Results are memoised per scorer,
so probes that ask the same questions (knowledge and utility) do not pay twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm


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
        positions = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", max_length
        )
        self.max_length = min(max_length, int(positions))
        self.quiet = quiet
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
        width = max(len(ids) for ids in sequences)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
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
        limit = max(self.max_length - max_new_tokens, 1)
        encoded = [(self._bos() + self._encode(p))[-limit:] for p in prompts]
        width = max(len(ids) for ids in encoded)
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad,
                eos_token_id=self.tokenizer.eos_token_id,
                **({"stop_strings": list(stop), "tokenizer": self.tokenizer} if stop else {}),
            )
        new_tokens = output[:, width:]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
