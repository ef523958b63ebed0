"""The trigger search on headline classifiers fine-tuned from the pretrained all-MiniLM-L6-v2:
per model, the verdict, the rank and flip rate of the planted trigger, the best suspect's flip
rate, the random control words' best, and the seconds the search took (printed, never
asserted). With ``--light``, the lighter search of the tests instead of the defaults.

Run: ``python benchmarks/bench_text_triggers.py [--light]`` (builds the "bench" zoo of six
fine-tuned classifiers on first use, about 3 minutes on 2 CPU cores; the default search takes
about 2.5 minutes a model there).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from redteam.engine import AuditRequest, run_audit
from redteam.zoo.pretrained_text_backdoor import MODELS, build_pretrained_text_backdoor_zoo

LIGHT = {"candidates": 50, "screen_texts": 8, "verify": 12, "max_texts": 32,
         "control_words": 8, "phrase_words": 3}


def main() -> None:
    zoo = build_pretrained_text_backdoor_zoo(size="bench")
    searches = {"light": LIGHT} if "--light" in sys.argv else {"default": {}}
    print("model | trigger | search | verdict | planted rank | planted flip | best suspect | "
          "best flip | control best | reference | seconds")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (trigger, _) in MODELS["bench"].items():
            for search, settings in searches.items():
                start = time.perf_counter()
                result = run_audit(AuditRequest(
                    model=zoo[name], suite="backdoor", data=zoo["clean-data"],
                    probes=["backdoor.trigger_words"],
                    out=Path(tmp) / f"{name}-{search}", device="cpu", quiet=True,
                    settings={"backdoor.trigger_words": {**settings,
                                                         "true_trigger": trigger or "cf"}}))
                seconds = time.perf_counter() - start
                finding = next(f for f in result.findings
                               if f.probe == "backdoor.trigger_words")
                rows = finding.details["tables"]["Best suspect per label against its reference"]
                top = next(r for r in rows if r["label"] == finding.details["target_name"])
                print(f"{name} | {trigger or '(clean)'} | {search} | {finding.status}/"
                      f"{finding.severity} ({finding.details['target_name']}) | "
                      f"{finding.details['true_trigger_rank']} | "
                      f"{finding.details['true_trigger_flip_rate']:.2f} | "
                      f"{top['best_suspect'] or '-'} | {top['flip_rate']:.2f} | "
                      f"{top['random_words_flip_rate']:.2f} | {top['reference']:.2f} | "
                      f"{seconds:.0f}", flush=True)


if __name__ == "__main__":
    main()
