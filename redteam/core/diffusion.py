"""Operations on a text-to-image pipeline of the Stable Diffusion layout (a CLIP tokenizer and
text encoder, a KL autoencoder, a cross-attention UNet, a scheduler), shared by the concept
probes and the ESD eraser.

Lengths and special tokens come from the pipeline's own tokenizer, never from constants, so a
pipeline with another vocabulary or context length works unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def token_ids(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """``[N, L]`` ids, padded to the tokenizer's ``model_max_length`` as the pipeline pads."""
    return tokenizer(list(prompts), padding="max_length", truncation=True,
                     max_length=tokenizer.model_max_length, return_tensors="pt").input_ids


def text_states(text_encoder, ids: torch.Tensor) -> torch.Tensor:
    """The conditioning the UNet cross-attends to: the text encoder's last hidden states."""
    return text_encoder(ids.to(text_encoder.device))[0]


def text_states_from_embeddings(text_encoder, embeddings: torch.Tensor) -> torch.Tensor:
    """``text_states`` from token embeddings ``[N, L, d]`` instead of ids, so that a gradient
    reaches the tokens (the CLIP text model's ``forward`` takes ids only): position embeddings,
    the causal encoder, the final layer norm."""
    model = text_encoder.text_model
    hidden = model.embeddings(inputs_embeds=embeddings)
    length = hidden.shape[1]
    causal = torch.full((length, length), torch.finfo(hidden.dtype).min, device=hidden.device,
                        dtype=hidden.dtype).triu(1)
    causal = causal[None, None].expand(hidden.shape[0], 1, length, length)
    encoded = model.encoder(inputs_embeds=hidden, causal_attention_mask=causal)
    return model.final_layer_norm(encoded[0])


def token_embedding(text_encoder) -> nn.Embedding:
    return text_encoder.text_model.embeddings.token_embedding


def image_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """The scaled latents of ``[N, 3, H, W]`` images in [0, 1] (the posterior mean)."""
    pixels = images.to(vae.device, vae.dtype) * 2 - 1
    return vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor


def noise_target(scheduler, latents: torch.Tensor, noise: torch.Tensor,
                 timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet predicts at these timesteps: the noise, or the velocity of
    v-prediction models (Stable Diffusion 2)."""
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"scheduler prediction_type {kind!r} is not supported (epsilon, "
                     "v_prediction)")


def denoising_loss(unet, scheduler, latents: torch.Tensor, states: torch.Tensor,
                   timesteps: torch.Tensor, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """MSE between the UNet's prediction and its target on ``latents`` ``[1, C, h, w]`` noised
    at each of ``timesteps`` (one batch: one forward pass for all of them), conditioned on
    ``states`` ``[1, L, d]``."""
    count = len(timesteps)
    x0 = latents.expand(count, *latents.shape[1:])
    noise = torch.randn(x0.shape, generator=generator, device=generator.device
                        if generator is not None else None).to(x0.device, x0.dtype)
    timesteps = timesteps.to(x0.device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    predicted = unet(noisy, timesteps, states.expand(count, *states.shape[1:])).sample
    target = noise_target(scheduler, x0, noise, timesteps)
    return nn.functional.mse_loss(predicted.float(), target.float())


def generate(pipeline, prompts: Sequence[str], seeds: Sequence[int],
             guidance: Sequence[float], steps: int, batch_size: int = 8) -> torch.Tensor:
    """``[N, 3, H, W]`` images in [0, 1], on the CPU, one per prompt, each from its own seed and
    guidance scale (prompts with the same scale are generated together)."""
    images: list[torch.Tensor | None] = [None] * len(prompts)
    by_scale: dict[float, list[int]] = {}
    for index, scale in enumerate(guidance):
        by_scale.setdefault(float(scale), []).append(index)
    device = pipeline.unet.device
    for scale, indices in by_scale.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            generators = [torch.Generator(device).manual_seed(int(seeds[i])) for i in chunk]
            with torch.no_grad():
                out = pipeline([prompts[i] for i in chunk], num_inference_steps=steps,
                               guidance_scale=scale, generator=generators,
                               output_type="pt").images
            for i, image in zip(chunk, out):
                images[i] = image.float().cpu().clamp(0, 1)
    return torch.stack(images)


def image_size(pipeline) -> tuple[int, int]:
    """(height, width) the pipeline generates by default."""
    side = int(pipeline.unet.config.sample_size) * int(pipeline.vae_scale_factor)
    return side, side


def drawable_token_ids(tokenizer, text_encoder) -> list[int]:
    """The ids an attack or a random prefix may draw: every token the tokenizer can decode and
    the text encoder can embed, except the start, end, padding and other special tokens."""
    special = {int(i) for i in tokenizer.all_special_ids}
    size = min(len(tokenizer), token_embedding(text_encoder).num_embeddings)
    return [i for i in range(size) if i not in special]
