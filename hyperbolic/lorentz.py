"""Lorentz-model hyperbolic geometry for HySAC (Poppi et al., CVPR 2025) and MERU (Desai et al.,
ICML 2023, arXiv:2304.09172), on geoopt's Lorentz math.

Points live on the hyperboloid of curvature −c: ``x = (x_time, x_space)`` with
⟨x, x⟩_L = −x_time² + ‖x_space‖² = −1/c. geoopt writes the same manifold with k = 1/c
(``Lorentz(k)``: ⟨x, x⟩_L = −k), so every call below passes ``k = 1 / c``. Embeddings enter
through the exponential map at the origin, so "farther from the origin" is the geodesic
distance ``distance_to_origin`` — HySAC's measure of how specific (or unsafe) content is.

Entailment cones (MERU): a point x casts a cone of half-aperture asin(2K / (√c ‖x_space‖)),
K = 0.1, narrower the farther x is from the origin; y is entailed by x when the exterior angle
at x between the origin-to-x ray and the x-to-y geodesic is inside the cone.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

with warnings.catch_warnings():  # geoopt decorates its math with the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from geoopt.manifolds.lorentz import math as lorentz_math

EPS = 1e-6
CONE_K = 0.1  # MERU's minimum cone constant


def _k(c: torch.Tensor | float) -> torch.Tensor:
    return 1.0 / torch.as_tensor(c, dtype=torch.float32)


def time_component(space: torch.Tensor, c: torch.Tensor | float) -> torch.Tensor:
    """x_time = sqrt(1/c + ‖x_space‖²): the coordinate that puts ``space`` on the hyperboloid."""
    return torch.sqrt(1.0 / torch.as_tensor(c) + (space ** 2).sum(-1, keepdim=True))


def expmap0(v: torch.Tensor, c: torch.Tensor | float) -> torch.Tensor:
    """Lift a tangent vector at the origin (``[..., d]``, the space part) onto the hyperboloid:
    returns the full point ``[..., d + 1]`` (time first)."""
    tangent = torch.cat([torch.zeros_like(v[..., :1]), v], dim=-1)
    return lorentz_math.expmap0(tangent, k=_k(c).to(v))


def logmap0(x: torch.Tensor, c: torch.Tensor | float) -> torch.Tensor:
    """The inverse of ``expmap0``: the space part of the tangent vector at the origin."""
    return lorentz_math.logmap0(x, k=_k(c).to(x))[..., 1:]


def lorentz_inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise ⟨x_i, y_j⟩_L = −x_time y_time + x_space · y_space: ``[N, M]``."""
    return x[..., 1:] @ y[..., 1:].transpose(-1, -2) - x[..., :1] @ y[..., :1].transpose(-1, -2)


def distance(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor | float) -> torch.Tensor:
    """Geodesic distance of matching rows of ``x`` and ``y`` (geoopt's closed form)."""
    return lorentz_math.dist(x, y, k=_k(c).to(x))


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor | float) -> torch.Tensor:
    """All geodesic distances ``[N, M]`` in one matrix product: arcosh(−c⟨x, y⟩_L) / √c."""
    c = torch.as_tensor(c).to(x)
    argument = (-c * lorentz_inner(x, y)).clamp_min(1.0 + EPS)
    return torch.acosh(argument) / torch.sqrt(c)


def distance_to_origin(x: torch.Tensor, c: torch.Tensor | float) -> torch.Tensor:
    """Geodesic distance from the origin (HySAC's radius)."""
    return lorentz_math.dist0(x, k=_k(c).to(x))


def half_aperture(x: torch.Tensor, c: torch.Tensor | float) -> torch.Tensor:
    """Half-aperture of the entailment cone at ``x``: asin(2K / (√c ‖x_space‖)), clamped so that
    points near the origin get (almost) a half-space."""
    c = torch.as_tensor(c).to(x)
    ratio = 2 * CONE_K / (torch.sqrt(c) * x[..., 1:].norm(dim=-1) + EPS)
    return torch.asin(ratio.clamp(-1 + EPS, 1 - EPS))


def exterior_angle(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor | float) -> torch.Tensor:
    """Angle at ``x`` between the ray from the origin through ``x`` and the geodesic from ``x``
    to ``y``, for matching rows: 0 when ``y`` lies straight beyond ``x``, π when ``y`` lies
    back towards the origin."""
    c = torch.as_tensor(c).to(x)
    inner = (x[..., 1:] * y[..., 1:]).sum(-1) - x[..., 0] * y[..., 0]
    c_inner = c * inner
    numerator = y[..., 0] + c_inner * x[..., 0]
    denominator = x[..., 1:].norm(dim=-1) * torch.sqrt((c_inner ** 2 - 1).clamp_min(EPS))
    return torch.acos((numerator / (denominator + EPS)).clamp(-1 + EPS, 1 - EPS))


def entailment_loss(general: torch.Tensor, specific: torch.Tensor,
                    c: torch.Tensor | float) -> torch.Tensor:
    """max(0, exterior angle − half-aperture), averaged: pushes ``specific`` inside the cone of
    ``general`` (MERU: a text entails its image)."""
    return (exterior_angle(general, specific, c) - half_aperture(general, c)).clamp_min(0).mean()


class LorentzEmbedding(nn.Module):
    """Learnable curvature and embedding scale, and the lift of Euclidean features.

    Curvature c is learnt as log c (init ``curvature``) and clamped to [c₀/10, 10 c₀]; each
    modality's features are scaled by a learnable α (init d^−½, learnt as log α) before the
    exponential map, as in MERU and HySAC.
    """

    def __init__(self, dim: int, curvature: float = 1.0, learn_curvature: bool = True) -> None:
        super().__init__()
        self.bounds = (math.log(curvature / 10), math.log(curvature * 10))
        self.log_c = nn.Parameter(torch.tensor(math.log(curvature)),
                                  requires_grad=learn_curvature)
        self.log_alpha_text = nn.Parameter(torch.tensor(-0.5 * math.log(dim)))
        self.log_alpha_image = nn.Parameter(torch.tensor(-0.5 * math.log(dim)))

    @property
    def c(self) -> torch.Tensor:
        return self.log_c.clamp(*self.bounds).exp()

    def forward(self, features: torch.Tensor, modality: str) -> torch.Tensor:
        """Features ``[N, d]`` -> points on the hyperboloid ``[N, d + 1]``."""
        alpha = self.log_alpha_text if modality == "text" else self.log_alpha_image
        return expmap0(features * alpha.exp(), self.c)
