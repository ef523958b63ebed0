"""Two overheads of an LLM audit on the CPU, before and after, side by side (printed, never
asserted).

(a) A padded forward pass of a tiny GPT-2 (batch 16, 60 tokens, the demo LM's size) with
transformers' own vmap-built attention mask vs the broadcast one (``core.attention_masks``).
(b) The bootstrap interval of an AUC (1000 resamples of 24 members and 16 non-members):
sklearn's ``roc_auc_score`` per resample vs the rank statistic over all resamples at once
(``core.metrics.bootstrap_auc_ci``).

Run: ``make bench``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from transformers import GPT2Config, GPT2LMHeadModel
from transformers import masking_utils as library

from redteam.core import attention_masks
from redteam.core.metrics import bootstrap_auc_ci

REPEATS = 50


def forward_seconds(model, ids, mask) -> float:
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
        start = time.perf_counter()
        for _ in range(REPEATS):
            model(input_ids=ids, attention_mask=mask)
    return (time.perf_counter() - start) / REPEATS


def sklearn_bootstrap(members, others, n_resamples: int = 1000) -> list[float]:
    rng = np.random.default_rng(0)
    stats = []
    for _ in range(n_resamples):
        m = members[rng.integers(0, len(members), len(members))]
        o = others[rng.integers(0, len(others), len(others))]
        stats.append(roc_auc_score(np.r_[np.ones(len(m)), np.zeros(len(o))], np.r_[m, o]))
    return [round(float(np.percentile(stats, q)), 4) for q in (2.5, 97.5)]


def main() -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=1000, n_positions=256, n_embd=128, n_layer=2,
                                       n_head=4)).eval()
    ids = torch.randint(0, 1000, (16, 60))
    mask = torch.ones_like(ids)
    for row in range(16):
        mask[row, 60 - 3 * row:] = 0  # right padding of different lengths
    library.AttentionMaskInterface.register("sdpa", library.sdpa_mask)
    vmap = forward_seconds(model, ids, mask)
    attention_masks._INSTALLED = False
    attention_masks.install()
    broadcast = forward_seconds(model, ids, mask)
    print(f"(a) padded forward, batch 16 x 60 tokens: vmap mask {vmap * 1e3:.2f} ms, broadcast "
          f"mask {broadcast * 1e3:.2f} ms: {vmap / broadcast:.2f}x; torch threads "
          f"{torch.get_num_threads()}")

    rng = np.random.default_rng(1)
    members, others = rng.normal(0.5, 1, 24).round(1), rng.normal(0, 1, 16).round(1)
    start = time.perf_counter()
    old = sklearn_bootstrap(members, others)
    per_call = time.perf_counter() - start
    start = time.perf_counter()
    new = bootstrap_auc_ci(members, others)
    ranks = time.perf_counter() - start
    print(f"(b) AUC bootstrap, 1000 resamples: sklearn per resample {per_call:.3f} s, ranks at "
          f"once {ranks:.4f} s: {per_call / ranks:.0f}x; intervals {old} and {new}")


if __name__ == "__main__":
    main()
