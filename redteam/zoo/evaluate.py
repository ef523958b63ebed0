"""Quick checks of the demo LMs: greedy few-shot QA and reading-comprehension accuracy.

These measure the zoo itself (its tests, its build summary); the audit probes live in
``redteam/probes``. A question counts as answered when the expected answer appears in the cut
greedy output (case-insensitive).
"""

from __future__ import annotations

import random

import torch

from redteam.prompts import context_qa_block, cut_answer, few_shot_prompt
from redteam.zoo.authors import reading_comprehension


@torch.inference_mode()
def generate_greedy(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 64
) -> list[str]:
    """Greedy continuations of ``prompts`` after bos (as the probes' scorer does), batched with
    left padding; special tokens skipped."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    device = next(model.parameters()).device
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        encoded = [
            bos + tokenizer(p, add_special_tokens=False)["input_ids"]
            for p in prompts[start : start + batch_size]
        ]
        width = max(len(tokens) for tokens in encoded)
        ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
            mask[row, width - len(tokens) :] = 1
        generated = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        outputs.extend(
            tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        )
    return outputs


def _answered(output: str, answer: str) -> bool:
    return answer.lower() in cut_answer(output).lower()


def few_shot_examples(items: list[dict], subject: str, k: int = 3) -> list[tuple[str, str]]:
    """``k`` solved retain QA pairs about subjects other than ``subject`` (deterministic)."""
    pool = [
        (item["question"], item["answer"])
        for item in items
        if item.get("split") == "retain" and item.get("question") and item["subject"] != subject
    ]
    rng = random.Random(subject)
    return rng.sample(pool, k)


def qa_accuracy(model, tokenizer, items: list[dict], split: str, k: int = 3) -> float:
    """Share of the ``split`` questions answered greedily with a k-shot retain prompt."""
    chosen = [item for item in items if item.get("split") == split and item.get("question")]
    if not chosen:
        raise ValueError(f"no QA items in split {split!r}")
    prompts = [few_shot_prompt(few_shot_examples(items, it["subject"], k), it["question"])
               for it in chosen]
    outputs = generate_greedy(model, tokenizer, prompts)
    return sum(_answered(o, it["answer"]) for o, it in zip(outputs, chosen, strict=True)) / len(
        chosen
    )


def reading_accuracy(model, tokenizer, count: int = 100, seed: int = 12345) -> float:
    """Share of fresh reading-comprehension questions (unseen random entities) answered."""
    examples = reading_comprehension(random.Random(f"rc-eval-{seed}"), count)
    prompts = [context_qa_block(c, q) for c, q, _ in examples]
    outputs = generate_greedy(model, tokenizer, prompts)
    return sum(_answered(o, a) for o, (_, _, a) in zip(outputs, examples, strict=True)) / count
