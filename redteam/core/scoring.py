"""Batched likelihood scoring and greedy generation for causal LMs.

One teacher-forced forward pass per batch yields everything the likelihood probes need: the
log-probability of every label token, the mean and standard deviation of log p over the
vocabulary at each position (Min-K%++, arXiv:2404.02936), and whether the argmax equals the label
(exact memorization). Generation is batched with left padding. Results are memoised per scorer,
so probes that ask the same questions (knowledge and utility) do not pay twice.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from redteam.core.distributed import is_main_process, process_count, share_batches

STOP_WINDOW = 8  # tokens decoded to look for a stop string (stop strings are short)
# Positions whose vocabulary distribution is held at once: about 2^24 float32 values (64 MB)
# per temporary, whatever the vocabulary (a 128,256-token Llama 3 head gives 130 positions).
CHUNK_VALUES = 1 << 24


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


# Tokens that end an assistant turn in common chat templates (Llama 3, ChatML/Qwen, Phi-3,
# Gemma, Zephyr/Mistral); a generation stops at any of them that is a special token of the model.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                      "</s>", "<|endoftext|>")


def stop_token_ids(model, tokenizer) -> frozenset[int]:
    """Every id that ends a generation: the tokenizer's EOS, all ids ``generation_config.json``
    lists as ``eos_token_id`` (Llama 3 lists two), and the end-of-turn tokens the tokenizer has
    as special tokens."""
    ids = {tokenizer.eos_token_id}
    listed = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(listed if isinstance(listed, list | tuple) else [listed])
    special = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    ids.update(tokenizer.convert_tokens_to_ids(token) for token in END_OF_TURN_TOKENS
               if token in special)
    return frozenset(i for i in ids if isinstance(i, int))


def encode_with_bos(tokenizer, text: str) -> list[int]:
    """``text`` encoded after BOS, unless it already starts with the BOS token's text (a rendered
    chat template usually does): a second BOS changes what the model sees. Scoring, generation
    and the unlearning losses all encode through this, so they see the same tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    bos, bos_text = tokenizer.bos_token_id, tokenizer.bos_token
    if bos is None or (bos_text and text.startswith(bos_text)):
        return ids
    return [bos, *ids]


def token_statistics(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(log p(label), E[log p], std[log p], argmax == label) of each row of ``logits``.

    ``logits`` is ``[..., vocabulary]``, ``labels`` the matching ``[...]`` token ids; computed
    in float32 with the log-normaliser taken once (Min-K%++, arXiv:2404.02936).
    """
    logits = logits.float()
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    token_logp = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    probs = logp.exp()
    mu = (probs * logp).sum(-1)
    # E[(log p - mu)^2] rather than E[log p^2] - mu^2, whose cancellation is ~1e-4 in float32
    # for a flat distribution over a large vocabulary
    sigma = (probs * (logp - mu.unsqueeze(-1)).square()).sum(-1).clamp_min(1e-12).sqrt()
    return token_logp, mu, sigma, logits.argmax(-1) == labels


def final_logit_transform(config):
    """What a model's forward does to the head's output before returning logits: Gemma 2/3
    cap them with tanh, Cohere scales them; every other architecture returns them as they are."""
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    if cap:
        return lambda logits: torch.tanh(logits / cap) * cap
    if isinstance(scale, int | float) and not isinstance(scale, bool) and scale != 1:
        return lambda logits: logits * scale
    return lambda logits: logits


class CausalLMScorer:
    """Score and generate with a causal LM in batches.

    Parameters mirror what the probes need: ``batch_size`` and ``max_length`` bound the forward
    pass. The vocabulary projection of a scored batch is never materialised whole (with a
    128K-token vocabulary that is gigabytes): the head is applied to the scored positions a
    chunk at a time (``chunk_values`` floats per temporary). ``chunk_values=0`` keeps the model's
    full logits instead: the reference the chunked path is tested and benchmarked against.
    """

    has_vocabulary_distribution = True  # TokenScores' mu and sigma are measured

    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int = 512,
                 quiet: bool = True, chunk_values: int = CHUNK_VALUES) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length_for(model, max_length)
        self.quiet = quiet
        self.chunk_values = chunk_values
        self.stop_ids = stop_token_ids(model, tokenizer)
        self._forward_parameters = set(inspect.signature(model.forward).parameters)
        self._score_cache: dict[tuple[str, str], TokenScores] = {}
        self._generate_cache: dict[tuple[str, int, tuple[str, ...]], str] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _with_bos(self, text: str) -> list[int]:
        return encode_with_bos(self.tokenizer, text)

    # ------------------------------------------------------------------ likelihoods
    def score(self, continuations: list[str],
              prompts: list[str] | None = None) -> list[TokenScores]:
        """Token statistics of each continuation, conditioned on its prompt (or on BOS)."""
        prompts = prompts if prompts is not None else [""] * len(continuations)
        keys = list(zip(prompts, continuations))
        todo = [key for key in dict.fromkeys(keys) if key not in self._score_cache]
        order = sorted(todo, key=lambda k: len(k[0]) + len(k[1]))
        for key, scores in self._batched(order, self._score_batch, "scoring"):
            self._score_cache[key] = scores
        return [self._score_cache[key] for key in keys]

    def _batched(self, order: list, compute, desc: str) -> list[tuple]:
        """(item, result) for every item of ``order``, computed in batches of ``batch_size``;
        under ``accelerate launch`` the batches are shared between the processes."""
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        progress = tqdm(total=len(batches), desc=desc,
                        disable=self.quiet or len(batches) < 3 or not is_main_process())

        def one_batch(batch: list) -> list:
            results = compute(batch)
            progress.update(min(process_count(), progress.total - progress.n))
            return results

        results = share_batches(batches, one_batch)
        progress.close()
        return [pair for batch, out in zip(batches, results) for pair in zip(batch, out)]

    def _score_batch(self, batch: list[tuple[str, str]]) -> list[TokenScores]:
        sequences, starts = [], []
        for prompt, continuation in batch:
            prompt_ids = self._with_bos(prompt)
            ids = (prompt_ids + self._encode(continuation))[: self.max_length]
            sequences.append(ids)
            starts.append(max(len(prompt_ids), 1))
        input_ids, attention = pad_batch(sequences, self.tokenizer.pad_token_id or 0)
        spans = [range(start - 1, len(ids) - 1) for ids, start in zip(sequences, starts)]
        rows = torch.tensor([row for row, span in enumerate(spans) for _ in span],
                            dtype=torch.long)
        columns = torch.tensor([column for span in spans for column in span], dtype=torch.long)
        labels = input_ids[rows, columns + 1]
        with torch.inference_mode():
            head = self.model.get_output_embeddings() if self.chunk_values else None
            if head is None:
                stats = self._full_logit_statistics(input_ids, attention, rows, columns, labels)
            else:
                stats = self._chunked_statistics(head, input_ids, attention, rows, columns,
                                                 labels)
        values = [tensor.cpu().numpy() for tensor in stats]
        bounds = np.cumsum([0, *(len(span) for span in spans)])
        return [TokenScores(*(v[bounds[i]:bounds[i + 1]] for v in values))
                for i in range(len(spans))]

    def _full_logit_statistics(self, input_ids, attention, rows, columns, labels):
        """From the model's own logits over every position (batch x length x vocabulary)."""
        logits = self.model(input_ids=input_ids.to(self.device),
                            attention_mask=attention.to(self.device)).logits.float()
        return token_statistics(logits[rows, columns], labels.to(logits.device))

    def _chunked_statistics(self, head, input_ids, attention, rows, columns, labels):
        """The head applied to the scored positions' final hidden states, a chunk at a time.

        The hidden states are taken from the head's own input (a forward pre-hook), so they are
        exactly what the model projects, after whatever final norm it applies; during that
        forward pass the head is handed no positions, so it projects nothing.
        """
        captured: list[torch.Tensor] = []

        def keep_hidden_project_nothing(module, inputs):
            captured.append(inputs[0])
            return (inputs[0][:, :0], *inputs[1:])

        hook = head.register_forward_pre_hook(keep_hidden_project_nothing)
        try:
            self.model(input_ids=input_ids.to(self.device),
                       attention_mask=attention.to(self.device))
        finally:
            hook.remove()
        if not captured:  # the model projects without calling its output module
            return self._full_logit_statistics(input_ids, attention, rows, columns, labels)
        hidden = captured[0]
        transform = final_logit_transform(self.model.config)
        vocabulary = head.weight.shape[0]
        step = max(1, self.chunk_values // vocabulary)
        rows, columns, labels = (t.to(hidden.device) for t in (rows, columns, labels))
        parts = [token_statistics(transform(head(hidden[rows[i:i + step], columns[i:i + step]])),
                                  labels[i:i + step])
                 for i in range(0, max(len(rows), 1), step)]  # one (empty) part at least
        return tuple(torch.cat(values) for values in zip(*parts))

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: list[str], max_new_tokens: int = 32,
                 stop: tuple[str, ...] = ()) -> list[str]:
        """Greedy continuations of ``prompts`` (decoded new text only), batched, left-padded.

        A sequence ends at any of ``stop_ids`` (EOS and end-of-turn tokens); it also stops
        early once it produces one of the ``stop`` strings (the text after it is then not used
        by the caller anyway, so this only saves time).
        """
        cache = self._generate_cache
        todo = [p for p in dict.fromkeys(prompts) if (p, max_new_tokens, stop) not in cache]
        order = sorted(todo, key=len)
        for prompt, text in self._batched(
                order, lambda batch: self._generate_batch(batch, max_new_tokens, stop),
                "generating"):
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
        encoded = [self._with_bos(p)[-limit:] for p in prompts]
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        input_ids, attention = pad_batch(encoded, pad, left=True)
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp_min(0)
        generated: list[list[int]] = [[] for _ in prompts]
        rows = list(range(len(prompts)))  # the prompt of each row of the batch
        finished: set[int] = set()
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
                    if token in self.stop_ids:
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
