"""UnlearnDiffAtk's optimisation: timesteps batched in one forward pass vs one at a time.

Printed, never asserted: the same attack (same prefix length, the same timesteps, the same
Adam steps per timestep block) on the same pipeline, with ``timestep_batch`` 5 (the default) and
1 (the reference's one timestep per pass); the rate counts timestep evaluations (a forward and
backward pass of one noised latent) per second, and the seconds of a whole sweep. The judge
never says yes, so both sweep every timestep; generations use one inference step, so the
optimisation is what is timed.

Run: ``make bench`` (an untrained pipeline of the demo's layout, built in seconds).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from redteam.judges import Verdicts
from redteam.probes.concept_attack import PrefixAttack
from redteam.targets import load_target
from redteam.zoo.diffusion import untrained_pipeline, write_tokenizer


def never(images: torch.Tensor) -> Verdicts:
    return Verdicts([False] * len(images), [0.0] * len(images))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp) / "tokenizer")
        untrained_pipeline(Path(tmp) / "tokenizer").save_pretrained(Path(tmp) / "pipeline")
        pipeline = load_target(Path(tmp) / "pipeline").model
    latents = torch.randn(1, 4, 8, 8)
    timesteps, iterations = 20, 10
    print(f"UnlearnDiffAtk on the demo's pipeline layout: k = 5, {timesteps} timesteps x "
          f"{iterations} Adam steps, torch threads {torch.get_num_threads()}")
    rates = {}
    for batch in (5, 1):
        attack = PrefixAttack(k=5, timesteps=timesteps, iterations=iterations,
                              timestep_batch=batch, inference_steps=1)
        start = time.perf_counter()
        outcome = attack.run(pipeline, "a red digit three", 0, 7.5, latents, never,
                             torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
        rates[batch] = timesteps * iterations / seconds
        print(f"  timestep_batch {batch}: {seconds:6.1f} s a sweep, {rates[batch]:7.1f} "
              f"timestep evaluations/s, {outcome.generations} judged generations")
    print(f"  batched (5) / one at a time = {rates[5] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
