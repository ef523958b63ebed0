"""The perturbation generator of Unlearnable Clusters (Zhang et al., CVPR 2023, arXiv:2301.01217).

Each cluster gets its own generator: a small ResNet-style encoder-decoder that maps one fixed
noise tensor to one perturbation, ``tanh`` at the output and clipped to the L∞ ball of radius
ε. Every image of the cluster receives the same perturbation, which is what makes it a shortcut
a model learns instead of the content.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(4, channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(4, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class PerturbationGenerator(nn.Module):
    """Fixed noise -> encoder (stride-2 convolutions) -> residual blocks -> decoder -> tanh,
    clipped to ``[-epsilon, epsilon]``: ``generator() -> [1, 3, H, W]``."""

    def __init__(self, size: tuple[int, int], epsilon: float, width: int = 32,
                 seed: int = 0) -> None:
        super().__init__()
        self.size, self.epsilon = tuple(size), float(epsilon)
        noise = torch.randn(1, 3, *self.size, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("noise", noise)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.GroupNorm(4, 2 * width),
            nn.ReLU())
        self.blocks = nn.Sequential(ResidualBlock(2 * width), ResidualBlock(2 * width))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 3, 3, padding=1), nn.Tanh())

    def forward(self) -> torch.Tensor:
        out = self.decoder(self.blocks(self.encoder(self.noise)))
        if tuple(out.shape[-2:]) != self.size:
            out = nn.functional.interpolate(out, size=self.size, mode="bilinear",
                                            align_corners=False)
        return out.clamp(-self.epsilon, self.epsilon)
