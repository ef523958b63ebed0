"""Tokens scored per second in process and through a vLLM server (printed, never asserted).

On the demo zoo's original model and its audit texts: the in-process scorer (batched), then
the same texts scored through vLLM's OpenAI-compatible endpoint (``/v1/completions`` with
``echo`` and ``logprobs``) at 1, 4 and 16 requests in flight. Each HTTP run uses a fresh
client without a response cache, so every request reaches the server. vLLM is the CPU build
of ``make vllm``; on a GPU machine set REDTEAM_VLLM_PYTHON to a GPU build's Python.

Run: ``make bench`` (builds the demo zoo and starts the server on first use).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redteam.core.data import load_audit_jsonl  # noqa: E402
from redteam.core.http import EndpointClient  # noqa: E402
from redteam.core.scoring import CausalLMScorer  # noqa: E402
from redteam.core.served import ServedModel, ServedScorer, ServedTokenizer  # noqa: E402
from redteam.targets import load_target  # noqa: E402
from redteam.zoo import build_unlearning_zoo  # noqa: E402
from tests.vllm_server import VLLMServer, vllm_missing  # noqa: E402

BATCH = int(os.environ.get("BENCH_BATCH", 16))
CONCURRENCY = (1, 4, 16)


def tokens_per_second(scorer, texts: list[str], tokens: int) -> float:
    start = time.perf_counter()
    scorer.score(texts)
    return tokens / (time.perf_counter() - start)


def main() -> None:
    missing = vllm_missing()
    if missing:
        print(f"bench_served: skipped, {missing}")
        return
    zoo = build_unlearning_zoo(size="demo")
    target = load_target(zoo["original"])
    data = load_audit_jsonl(zoo["audit"])
    base = [item.text for item in data.items if item.text]
    tokenizer = target.tokenizer
    with tempfile.TemporaryDirectory() as logs:
        server = VLLMServer(zoo["original"], "original", Path(logs) / "vllm.log")
        try:
            server.wait()
            rows = []
            for run, label in enumerate(["in process", *(f"HTTP, concurrency {c}"
                                                          for c in CONCURRENCY)]):
                texts = [f"{text} ({run})" for text in base]  # nothing served from a memo
                tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
                if run == 0:
                    scorer = CausalLMScorer(target.model, tokenizer, batch_size=BATCH)
                else:
                    client = EndpointClient(server.url, concurrency=CONCURRENCY[run - 1])
                    served = ServedModel.discover(client, "original")
                    scorer = ServedScorer(served, ServedTokenizer(served))
                    scorer.score(["warm-up"])
                rows.append((label, tokens_per_second(scorer, texts, tokens)))
        finally:
            server.stop()
    print(f"scoring {len(base)} audit texts of the demo's original model; vLLM started in "
          f"{server.startup_s:.0f} s; torch threads {torch.get_num_threads()}")
    reference = rows[0][1]
    for label, rate in rows:
        print(f"  {label:24} {rate:10.0f} tokens/s   x{rate / reference:5.2f} of in process")


if __name__ == "__main__":
    main()
