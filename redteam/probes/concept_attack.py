"""UnlearnDiffAtk (Zhang et al., "To Generate or Not? Safety-Driven Unlearned Diffusion Models
Are Still Easy to Generate Unsafe Images ... For Now", ECCV 2024, arXiv:2310.11868): an
adversarial prompt for a concept-erased text-to-image model, found with the model's own
denoising loss, no auxiliary classifier in the loop.

Each of ``k`` prefix tokens is a probability vector over the text encoder's vocabulary; a step
samples one token per row, embeds the one-hot rows (straight-through: the gradient reaches the
probabilities), and lowers the erased UNet's noise-prediction error on a target image of the
concept; after each Adam step every row is projected back onto the simplex. The timesteps are
swept in blocks; after each block the most likely tokens are decoded to text and the image
generated from that text is judged, so what is reported works as a plain prompt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from redteam.core.diffusion import (
    denoising_loss,
    drawable_token_ids,
    generate,
    text_states_from_embeddings,
    token_embedding,
)


def project_to_simplex(rows: torch.Tensor) -> torch.Tensor:
    """Each row's Euclidean projection onto {p : p >= 0, sum p = 1} (Duchi et al. 2008)."""
    ordered, _ = rows.sort(dim=-1, descending=True)
    cumulative = ordered.cumsum(-1) - 1
    ranks = torch.arange(1, rows.shape[-1] + 1, device=rows.device, dtype=rows.dtype)
    support = (ordered - cumulative / ranks > 0).sum(-1, keepdim=True)
    theta = cumulative.gather(-1, support - 1) / support
    return (rows - theta).clamp(min=0)


@contextmanager
def frozen(*modules: torch.nn.Module):
    """No parameter gradients inside (only the attack's token distribution learns)."""
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    for module in modules:
        module.requires_grad_(False)
    try:
        yield
    finally:
        for module, saved in zip(modules, flags):
            for parameter, flag in zip(module.parameters(), saved):
                parameter.requires_grad_(flag)


def timestep_sweep(train_steps: int, count: int) -> list[int]:
    """``count`` timesteps at the centres of equal slices of ``[0, train_steps)``: for 1,000
    steps and 50 of them, 10, 30, ..., 990 (the reference's sweep)."""
    return [(2 * i + 1) * train_steps // (2 * count) for i in range(count)]


@dataclass
class AttackOutcome:
    """One prompt attacked: whether a generation showed the concept, the adversarial text, how
    many generations were judged, the last image judged, its score, the loss per block."""

    shown: bool
    text: str
    generations: int
    image: torch.Tensor
    score: float
    losses: list[float] = field(default_factory=list)


@dataclass
class PrefixAttack:
    """The attack's settings (UnlearnDiffAtk's defaults: k = 5, 50 timesteps × 40 Adam steps,
    lr 0.01, weight decay 0.1); ``timestep_batch`` timesteps share one forward pass, and the
    text is judged after each such block."""

    k: int = 5
    timesteps: int = 50
    iterations: int = 40
    lr: float = 0.01
    weight_decay: float = 0.1
    timestep_batch: int = 5
    inference_steps: int = 50

    @property
    def blocks(self) -> int:
        """Generations judged per prompt at most: one per block of timesteps."""
        return math.ceil(self.timesteps / self.timestep_batch)

    def prefixed_ids(self, tokenizer, prompt: str) -> tuple[torch.Tensor, slice]:
        """The prompt's ids with ``k`` placeholder slots right after the start token, cut to
        the tokenizer's length (the end token kept), and where the slots are."""
        length = tokenizer.model_max_length
        content = tokenizer(prompt, add_special_tokens=False).input_ids
        start = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        room = length - len(start) - len(end) - self.k
        if room < 0:
            raise ValueError(f"k = {self.k} prefix tokens do not fit the tokenizer's "
                             f"{length} positions")
        ids = start + [tokenizer.pad_token_id or 0] * self.k + content[:room] + end
        ids += [tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                else end[0]] * (length - len(ids))
        return torch.tensor(ids), slice(len(start), len(start) + self.k)

    def run(self, pipeline, prompt: str, seed: int, guidance: float,
            target_latents: torch.Tensor, judge: Callable, generator: torch.Generator
            ) -> AttackOutcome:
        """Attack ``prompt`` towards ``target_latents`` (``[1, C, h, w]``, the concept's
        image); ``judge(images)`` returns ``Verdicts``. Stops at the first judged success."""
        tokenizer, encoder, unet = pipeline.tokenizer, pipeline.text_encoder, pipeline.unet
        embedding = token_embedding(encoder).weight
        device = embedding.device
        allowed = torch.zeros(embedding.shape[0], dtype=torch.bool, device=device)
        allowed[drawable_token_ids(tokenizer, encoder)] = True
        ids, slots = self.prefixed_ids(tokenizer, prompt)
        fixed = embedding[ids.to(device)].detach()
        probabilities = (allowed.float() / allowed.sum()).repeat(self.k, 1).requires_grad_()
        optimizer = torch.optim.Adam([probabilities], lr=self.lr,
                                     weight_decay=self.weight_decay)
        sweep = torch.tensor(timestep_sweep(pipeline.scheduler.config.num_train_timesteps,
                                            self.timesteps))
        outcome = AttackOutcome(False, prompt, 0, torch.zeros(0), 0.0)
        with frozen(encoder, unet):
            for start in range(0, len(sweep), self.timestep_batch):
                block = sweep[start:start + self.timestep_batch]
                losses = []
                for _ in range(self.iterations):
                    sampled = torch.multinomial(probabilities.detach(), 1, generator=generator)
                    hard = torch.zeros_like(probabilities).scatter_(1, sampled, 1.0)
                    one_hot = hard + probabilities - probabilities.detach()
                    embeds = torch.cat([fixed[:slots.start],
                                        (one_hot @ embedding.float()).to(embedding.dtype),
                                        fixed[slots.stop:]])[None]
                    states = text_states_from_embeddings(encoder, embeds)
                    loss = denoising_loss(unet, pipeline.scheduler, target_latents, states,
                                          block, generator)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    probabilities.grad.clamp_(-1.0, 1.0)
                    optimizer.step()
                    with torch.no_grad():
                        projected = project_to_simplex(probabilities[:, allowed])
                        probabilities.zero_()
                        probabilities[:, allowed] = projected
                    losses.append(float(loss.detach()))
                outcome.losses.append(round(sum(losses) / len(losses), 5))
                tokens = probabilities.detach().argmax(-1).tolist()
                text = f"{tokenizer.decode(tokens).strip()} {prompt}"
                image = generate(pipeline, [text], [seed], [guidance], self.inference_steps)
                verdict = judge(image)
                outcome.text, outcome.image, outcome.score = text, image[0], verdict.scores[0]
                outcome.generations += 1
                if verdict.shown[0]:
                    outcome.shown = True
                    break
        return outcome
