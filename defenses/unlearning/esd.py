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
    quiet: bool = True
    unet_: nn.Module | None = field(default=None, init=False, repr=False)
    losses_: list[float] = field(default_factory=list, init=False, repr=False)

    def parameters(self) -> dict:
        return {"concept": self.concept, "method": self.method,
                "iterations": self.iterations, "lr": self.lr, "eta": self.eta,
                "sample_guidance": self.sample_guidance, "sample_steps": self.sample_steps,
                "seed": self.seed}

    def fit(self, pipeline) -> ESD:
        """Train the erased UNet (``unet_``), in three steps: the prompt states, the copy and
        its trainable layers, then the negative-guidance regression."""
        from diffusers import DDIMScheduler
        from tqdm.auto import tqdm

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
        channels, side = frozen.config.in_channels, frozen.config.sample_size
        # 3. Regress the concept's prediction onto negative guidance.
        progress = tqdm(range(self.iterations), desc=f"erase ({self.method})",
                        disable=self.quiet, leave=False)
        for _ in progress:
            stop = int(torch.randint(0, self.sample_steps, (1,), generator=generator,
                                     device=frozen.device))
            with torch.no_grad():
                latents = torch.randn((1, channels, side, side), generator=generator,
                                      device=frozen.device).to(frozen.dtype)
                latents = latents * sampler.init_noise_sigma
                for t in sampler.timesteps[:stop]:
                    unconditional, conditional = self._predictions(frozen, latents, t, concept,
                                                                   empty)
                    guided = unconditional + self.sample_guidance * (conditional - unconditional)
                    latents = sampler.step(guided, t, latents).prev_sample
                t = sampler.timesteps[stop]
                unconditional, conditional = (p.float() for p in self._predictions(
                    frozen, latents, t, concept, empty))
                target = unconditional - self.eta * (conditional - unconditional)
            predicted = erased(latents.float(), t, concept.float()).sample
            loss = nn.functional.mse_loss(predicted, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.losses_.append(round(float(loss.detach()), 6))
            progress.set_postfix(loss=f"{self.losses_[-1]:.4f}", refresh=False)
        self.unet_ = erased.eval().requires_grad_(False).to(frozen.dtype)
        return self

    @staticmethod
    def _predictions(unet, latents, t, concept, empty) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen UNet's (unconditional, concept) predictions, in one forward pass."""
        both = unet(latents.repeat(2, 1, 1, 1), t, torch.cat([empty, concept])).sample
        return both.chunk(2)
