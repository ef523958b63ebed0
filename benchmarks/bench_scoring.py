"""Speed of likelihood scoring and generation on the demo LM (printed, never asserted).

(a) a bare batched forward pass, (b) the project's scoring (all four MIA scores from one pass),
(c) the same scores one text at a time; then batched (left-padded) vs one-at-a-time generation.
Targets: (b) >= 0.8 x (a) and (b) >= 5 x (c).

Run: ``make bench`` (builds the demo zoo on first use).
"""

from __future__ import annotations

import os
import time

import torch

from redteam.core.data import load_audit_jsonl
from redteam.core.metrics import loss_score, min_k_plus_plus_score, min_k_score, zlib_score
from redteam.core.prompts import qa_block
from redteam.core.scoring import CausalLMScorer
from redteam.targets import load_target
from redteam.zoo import build_unlearning_zoo

BATCH = int(os.environ.get("BENCH_BATCH", 16))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_forward(model, tokenizer, texts: list[str]) -> None:
    tokenizer.padding_side = "right"
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            batch = tokenizer(texts[start:start + BATCH], return_tensors="pt", padding=True)
            model(**batch)


def project_scores(model, tokenizer, texts: list[str], batch_size: int) -> None:
    scorer = CausalLMScorer(model, tokenizer, batch_size=batch_size)
    for text, scores in zip(texts, scorer.score(texts)):
        loss_score(scores), zlib_score(scores, text), min_k_score(scores)
        min_k_plus_plus_score(scores)


def main() -> None:
    zoo = build_unlearning_zoo(size="demo")
    target = load_target(zoo["original"])
    data = load_audit_jsonl(zoo["audit"])
    texts = [item.text for item in data.items if item.text]
    # Distinct texts so that nothing is served from the scorer's memo.
    texts = [f"{text} ({i})" for i in range(4) for text in texts]
    model, tokenizer = target.model, target.tokenizer
    tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
    torch.set_grad_enabled(False)
    bare_forward(model, tokenizer, texts[:BATCH])  # warm-up

    a = tokens / timed(lambda: bare_forward(model, tokenizer, texts))
    b = tokens / timed(lambda: project_scores(model, tokenizer, texts, BATCH))
    c = tokens / timed(lambda: project_scores(model, tokenizer, texts, 1))
    print(f"scoring on {len(texts)} audit texts ({tokens} tokens), batch {BATCH}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"  (a) bare batched forward        {a:10.0f} tokens/s")
    print(f"  (b) project scoring, batched    {b:10.0f} tokens/s   (b)/(a) = {b / a:.2f}  "
          f"[target >= 0.8]")
    print(f"  (c) project scoring, one by one {c:10.0f} tokens/s   (b)/(c) = {b / c:.1f}   "
          f"[target >= 5]")

    prompts = [qa_block(item.question) for item in data.items if item.question][:96]
    batched = CausalLMScorer(model, tokenizer, batch_size=BATCH)
    single = CausalLMScorer(model, tokenizer, batch_size=1)
    g_batched = len(prompts) / timed(lambda: batched.generate(prompts, max_new_tokens=16))
    g_single = len(prompts) / timed(lambda: single.generate(prompts, max_new_tokens=16))
    same = batched.generate(prompts, 16) == single.generate(prompts, 16)
    print(f"generation of {len(prompts)} answers (16 new tokens, greedy)")
    print(f"  batched, left padding           {g_batched:10.1f} prompts/s")
    print(f"  one prompt at a time            {g_single:10.1f} prompts/s   ratio = "
          f"{g_batched / g_single:.1f}; identical outputs: {same}")


if __name__ == "__main__":
    main()
