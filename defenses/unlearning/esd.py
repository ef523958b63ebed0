"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023, arXiv:2303.07345).

The erased UNet is fine-tuned so that its noise prediction for the concept follows negative
guidance away from it: with the frozen original ε*,

    target = ε*(x_t, t) − η · (ε*(x_t, c, t) − ε*(x_t, t)),   loss = ‖ε_θ(x_t, c, t) − target‖²,

where x_t is sampled by the frozen model from the concept's prompt (guidance 3) up to a random
step of the sampling schedule. ESD-x trains only the cross-attention layers (``attn2``: a
style or an artist, tied to the words); ESD-u trains every other layer (a global concept such
as nudity or an object, and, as the paper notes, some of its neighbours with it).

``redteam erase`` is the boundary around this class; it audits against what it writes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from redteam.core.diffusion import text_states, token_ids
from redteam.core.training import check_loss, check_trained

METHODS = ("esd-x", "esd-u")
REFERENCE = "arXiv:2303.07345"


def trainable_parameters(unet: nn.Module, method: str) -> list[nn.Parameter]:
    """ESD-x: the cross-attention (``attn2``) layers; ESD-u: every layer but those."""
    if method not in METHODS:
        raise ValueError(f"unknown ESD method {method!r}; choose from {', '.join(METHODS)}")
    chosen = []
    for name, parameter in unet.named_parameters():
        in_cross_attention = ".attn2." in f".{name}"
        if in_cross_attention == (method == "esd-x"):
            chosen.append(parameter)
    return chosen


@dataclass
class ESD:
    """Erase ``concept`` from a Stable-Diffusion-layout pipeline. The paper's settings by
    default (1,000 iterations, lr 1e-5, η = 1, x_t sampled with guidance 3 over 50 steps);
    ``fit`` trains a copy of the UNet and leaves the pipeline's own untouched."""

    concept: str
    method: str = "esd-x"
    iterations: int = 1000
    lr: float = 1e-5
    eta: float = 1.0
    sample_guidance: float = 3.0
    sample_steps: int = 50
    seed: int = 0
    sample_batch: int = 8  # x_t of this many iterations are sampled together
    quiet: bool = True
    unet_: nn.Module | None = field(default=None, init=False, repr=False)
    losses_: list[float] = field(default_factory=list, init=False, repr=False)

    def parameters(self) -> dict:
        return {"concept": self.concept, "method": self.method,
                "iterations": self.iterations, "lr": self.lr, "eta": self.eta,
                "sample_guidance": self.sample_guidance, "sample_steps": self.sample_steps,
                "sample_batch": self.sample_batch, "seed": self.seed}

    def fit(self, pipeline) -> ESD:
        """Train the erased UNet (``unet_``), in three steps: the prompt states, the copy and
        its trainable layers, then the negative-guidance regression."""
        from diffusers import DDIMScheduler
        from tqdm.auto import tqdm

        if self.sample_batch < 1:
            raise ValueError(f"sample_batch must be at least 1, not {self.sample_batch}")

        # 1. The concept's and the empty prompt's conditioning.
        frozen = pipeline.unet.eval().requires_grad_(False)
        with torch.no_grad():
            states = text_states(pipeline.text_encoder, token_ids(
                pipeline.tokenizer, [self.concept, ""]))
        concept, empty = states[:1], states[1:]
        # 2. The UNet being erased, and the layers that train.
        erased = copy.deepcopy(frozen).float()
        erased.requires_grad_(False)
        trained = trainable_parameters(erased, self.method)
        for parameter in trained:
            parameter.requires_grad_(True)
        erased.train()
        optimizer = torch.optim.Adam(trained, lr=self.lr)
        sampler = DDIMScheduler.from_config(pipeline.scheduler.config)
        sampler.set_timesteps(self.sample_steps, device=frozen.device)
        generator = torch.Generator(frozen.device).manual_seed(self.seed)
        # 3. Regress the concept's prediction onto negative guidance.
        progress = tqdm(total=self.iterations, desc=f"erase ({self.method})",
                        disable=self.quiet, leave=False)
        for first in range(0, self.iterations, self.sample_batch):
            count = min(self.sample_batch, self.iterations - first)
            latents, timesteps, targets = self._targets(frozen, sampler, generator, concept,
                                                        empty, count)
            for x_t, t, target in zip(latents, timesteps, targets):
                predicted = erased(x_t[None].float(), t, concept.float()).sample
                loss = nn.functional.mse_loss(predicted, target[None])
                check_loss(loss, len(self.losses_) + 1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.losses_.append(round(float(loss.detach()), 6))
                progress.set_postfix(loss=f"{self.losses_[-1]:.4f}", refresh=False)
                progress.update()
        progress.close()
        check_trained(erased, "ESD erasure")
        self.unet_ = erased.eval().requires_grad_(False).to(frozen.dtype)
        return self

    @torch.no_grad()
    def _targets(self, frozen, sampler, generator, concept, empty, count: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next ``count`` iterations' (x_t, t, negative-guidance target).

        Each iteration draws a random stop in the sampling schedule and a starting noise, and
        the frozen model samples from the concept's prompt up to that stop. The frozen model
        does not change during training, so the iterations' samples are drawn in the same order
        and advanced together, one batched forward pass per sampling step.
        """
        channels, side = frozen.config.in_channels, frozen.config.sample_size
        stops, starts = [], []
        for _ in range(count):
            stops.append(int(torch.randint(0, self.sample_steps, (1,), generator=generator,
                                           device=frozen.device)))
            starts.append(torch.randn((1, channels, side, side), generator=generator,
                                      device=frozen.device).to(frozen.dtype))
        latents = torch.cat(starts) * sampler.init_noise_sigma
        stops = torch.tensor(stops, device=frozen.device)
        for step, t in enumerate(sampler.timesteps[:int(stops.max())]):
            going = (stops > step).nonzero().flatten()
            unconditional, conditional = self._predictions(frozen, latents[going], t, concept,
                                                           empty)
            guided = unconditional + self.sample_guidance * (conditional - unconditional)
            latents[going] = sampler.step(guided, t, latents[going]).prev_sample
        timesteps = sampler.timesteps[stops]
        unconditional, conditional = (p.float() for p in self._predictions(
            frozen, latents, timesteps, concept, empty))
        return latents, timesteps, unconditional - self.eta * (conditional - unconditional)

    @staticmethod
    def _predictions(unet, latents, t, concept, empty) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen UNet's (unconditional, concept) predictions of every latent (at one
        timestep ``t`` or one per latent), in one forward pass."""
        count = len(latents)
        prompts = torch.cat([empty.expand(count, -1, -1), concept.expand(count, -1, -1)])
        timesteps = t.repeat(2) if t.dim() else t
        both = unet(latents.repeat(2, 1, 1, 1), timesteps, prompts).sample
        return both.chunk(2)
