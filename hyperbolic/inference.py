"""HySAC at inference: unsafe classification, safety traversal and retrieval (Poppi et al., CVPR
2025).

Unsafe content sits farther from the origin than safe content, so a point whose distance to the
origin exceeds the safety radius (the 95th percentile of the safe training embeddings) is
classified unsafe. Traversal moves such a query back along its geodesic towards the origin, to
the radius, where its nearest neighbours are the safe counterparts of what it asked for.
"""

from __future__ import annotations

import torch

from hyperbolic.lorentz import distance_to_origin, expmap0, logmap0, pairwise_distance


def classify_unsafe(points: torch.Tensor, c: torch.Tensor | float,
                    radius: float) -> torch.Tensor:
    """True for points farther from the origin than the safety radius."""
    return distance_to_origin(points, c) > radius


def traverse(points: torch.Tensor, c: torch.Tensor | float, radius: float) -> torch.Tensor:
    """Move every point beyond ``radius`` back along its geodesic from the origin to ``radius``
    (in the tangent space at the origin the distance is the norm); others stay where they are."""
    tangent = logmap0(points, c)
    norms = tangent.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    scale = torch.where(norms > radius, radius / norms, torch.ones_like(norms))
    return expmap0(tangent * scale, c)


def retrieve(queries: torch.Tensor, gallery: torch.Tensor, c: torch.Tensor | float,
             k: int = 10) -> torch.Tensor:
    """Indices ``[queries, k]`` of the nearest gallery points by geodesic distance."""
    k = min(k, len(gallery))
    return pairwise_distance(queries, gallery, c).topk(k, dim=-1, largest=False).indices
