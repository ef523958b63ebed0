"""Speed of the RWKU adversarial probe's generation on the demo LM (printed, never asserted).

Every attack prompt of the demo audit data (nine types) is answered greedily, batched with left
padding as the probe does, then one prompt at a time with the same decoding loop, and one at a
time through ``model.generate`` (what a plain loop over prompts would do). Target:
batched >= 5 x one at a time.

On this 2-layer model on CPU the prompts (three solved examples + the question, ~100 tokens)
dominate: their forward pass costs the same batched or not, and it bounds the gain.

Run: ``make bench`` (builds the demo zoo on first use).
"""

from __future__ import annotations

import os
import time

import torch

from redteam.core.answers import pick_shots
from redteam.core.data import load_audit_jsonl
from redteam.core.prompts import ANSWER_STOPS
from redteam.core.rewrites import build_attacks, render
from redteam.core.scoring import CausalLMScorer
from redteam.targets import load_target
from redteam.zoo import build_unlearning_zoo

BATCH = int(os.environ.get("BENCH_BATCH", 32))
SUBSET = int(os.environ.get("BENCH_PROMPTS", 64))


def prompts_per_second(scorer: CausalLMScorer, prompts: list[str]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    outputs = scorer.generate(prompts, max_new_tokens=32, stop=ANSWER_STOPS)
    return len(prompts) / (time.perf_counter() - start), outputs


def hf_generate_one_by_one(target, prompts: list[str]) -> float:
    """prompts/s of ``model.generate`` called once per prompt, with the same stop strings."""
    tokenizer = target.tokenizer
    start = time.perf_counter()
    for prompt in prompts:
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(prompt)["input_ids"]])
        target.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32,
                              do_sample=False, pad_token_id=0,
                              stop_strings=list(ANSWER_STOPS), tokenizer=tokenizer)
    return len(prompts) / (time.perf_counter() - start)


def main() -> None:
    zoo = build_unlearning_zoo(size="demo")
    target = load_target(zoo["npo"])
    data = load_audit_jsonl(zoo["audit"])
    attacks, _ = build_attacks(data)
    pool = data.with_fields("retain", "question", "answer")
    prompts = [render(a, pick_shots(a.item, pool, 3, 0)) for a in attacks]
    torch.set_grad_enabled(False)
    model, tokenizer = target.model, target.tokenizer
    CausalLMScorer(model, tokenizer, batch_size=BATCH).generate(prompts[:BATCH], 4)  # warm-up
    batched, out_b = prompts_per_second(CausalLMScorer(model, tokenizer, BATCH), prompts)
    # One at a time on a subset (the same prompts' share of the batched outputs is compared).
    subset = prompts[:: max(1, len(prompts) // SUBSET)]
    single, out_s = prompts_per_second(CausalLMScorer(model, tokenizer, 1), subset)
    naive = hf_generate_one_by_one(target, subset)
    index = {p: o for p, o in zip(prompts, out_b)}
    same = sum(index[p] == o for p, o in zip(subset, out_s))
    print(f"RWKU attack prompts: {len(prompts)} ({len({a.attack for a in attacks})} types), "
          f"greedy, up to 32 new tokens, stop at the end of the answer; torch threads "
          f"{torch.get_num_threads()}")
    print(f"  batched (batch {BATCH}, left padding) {batched:8.1f} prompts/s")
    print(f"  one at a time, same loop ({len(subset)})   {single:8.1f} prompts/s   batched/this = "
          f"{batched / single:.1f}  [target >= 5]; same outputs on {same}/{len(subset)}")
    print(f"  one at a time, model.generate   {naive:8.1f} prompts/s   batched/this = "
          f"{batched / naive:.1f}")


if __name__ == "__main__":
    main()
