"""Peak memory and speed of likelihood scoring with a 128,256-token vocabulary (Llama 3's),
the model's full logits against the chunked vocabulary projection, side by side in one run.

Each path runs in a fresh process on the same random-init Llama (2 layers, width 64, so the
vocabulary projection dominates as it does in a real model's scoring) and scores the same 32
texts of 200 tokens at batch 16. Peak memory is the growth of the process's resident set over
the scoring call (the kernel's high-water mark, reset just before it). Target:
chunked peak <= 25% of the full-logits peak at >= 0.9x its tokens/s.

Run: ``python benchmarks/bench_scoring_memory.py`` (part of ``make bench``).
"""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

VOCABULARY = 128_256
TEXTS, WORDS, BATCH = 32, 200, 16


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _measure(chunk_values: int, results) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from redteam.core.scoring import CausalLMScorer

    torch.manual_seed(0)
    torch.set_num_threads(2)
    words = [f"w{i}" for i in range(4000)]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<s>", "<pad>", *words])},
                                     unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", pad_token="<pad>")
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCABULARY, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=0, pad_token_id=1)).eval()
    rng = random.Random(0)
    texts = [" ".join(rng.choices(words, k=WORDS)) for _ in range(TEXTS)]
    scorer = CausalLMScorer(model, tokenizer, batch_size=BATCH, chunk_values=chunk_values)
    scorer.score(texts[:BATCH])  # warm-up, then a fresh cache for the measured call
    scorer._score_cache.clear()
    Path("/proc/self/clear_refs").write_text("5")  # reset the resident-set high-water mark
    baseline = _rss_kb("VmRSS")
    started = time.perf_counter()
    scores = scorer.score(texts)
    seconds = time.perf_counter() - started
    tokens = sum(len(s.logprobs) for s in scores)
    results.put({"peak_gb": (_rss_kb("VmHWM") - baseline) / 1024 ** 2,
                 "tokens_per_s": tokens / seconds, "tokens": tokens,
                 "mean_logprob": float(sum(s.logprobs.sum() for s in scores) / tokens)})


def measure(chunk_values: int) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_measure, args=(chunk_values, results))
    process.start()
    result = results.get()
    process.join()
    return result


def main() -> None:
    from redteam.core.scoring import CHUNK_VALUES

    full, chunked = measure(0), measure(CHUNK_VALUES)
    print(f"scoring {TEXTS} texts x {WORDS} tokens at batch {BATCH}, vocabulary {VOCABULARY:,} "
          "(random-init Llama, CPU)")
    print(f"{'':22}{'peak memory growth':>20}{'tokens/s':>12}")
    for name, row in (("full logits", full), ("chunked projection", chunked)):
        print(f"{name:22}{row['peak_gb']:>17.2f} GB{row['tokens_per_s']:>12.0f}")
    print(f"chunked / full: peak {chunked['peak_gb'] / full['peak_gb']:.1%} (target <= 25%), "
          f"speed {chunked['tokens_per_s'] / full['tokens_per_s']:.2f}x (target >= 0.9x); "
          f"mean log p {full['mean_logprob']:.6f} vs {chunked['mean_logprob']:.6f}")


if __name__ == "__main__":
    main()
