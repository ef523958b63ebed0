"""Captions and images to embeddings, for a plain CLIP and for its HySAC version alike.

The safety audit compares a CLIP with its HySAC fine-tune, so both answer the same questions:
embed captions, embed images (pixels in [0, 1]), and the distance between them — cosine distance
on CLIP's unit sphere, geodesic distance on HySAC's hyperboloid. Only HySAC knows how far from
the origin a point is, its safety radius, and how to traverse an unsafe query back inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from hyperbolic.inference import classify_unsafe, traverse
from hyperbolic.lorentz import distance_to_origin, pairwise_distance
from hyperbolic.model import HySAC


class Encoder(nn.Module):
    """``model`` (a ``CLIPModel`` or a ``HySAC``) with its tokenizer and image processor."""

    def __init__(self, model: nn.Module, tokenizer, processor) -> None:
        from redteam.core.vision import PixelModel

        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.pixels = PixelModel(self.clip, processor)  # resizing and normalisation only

    @property
    def hysac(self) -> HySAC | None:
        return self.model if isinstance(self.model, HySAC) else None

    @property
    def clip(self) -> nn.Module:
        """The CLIP, read through the HySAC each time (training may wrap it in LoRA)."""
        return self.model.clip if isinstance(self.model, HySAC) else self.model

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        limit = int(self.clip.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(list(captions), padding=True, truncation=True, max_length=limit,
                                return_tensors="pt")
        return {"input_ids": tokens["input_ids"].to(self.device),
                "attention_mask": tokens["attention_mask"].to(self.device)}

    def embed_texts(self, captions: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """One embedding per caption, in batches (a point on the hyperboloid for HySAC)."""
        parts = []
        with torch.inference_mode():
            for start in range(0, len(captions), batch_size):
                tokens = self.tokenize(captions[start:start + batch_size])
                if self.hysac is not None:
                    parts.append(self.hysac.embed_text(**tokens))
                else:
                    parts.append(nn.functional.normalize(
                        self.clip.get_text_features(**tokens), dim=-1))
        return torch.cat(parts).cpu()

    def embed_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """One embedding per image of ``images`` (``[N, 3, H, W]`` in [0, 1]), in batches."""
        parts = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                values = self.pixels.pixel_values(images[start:start + batch_size]
                                                  .to(self.device))
                if self.hysac is not None:
                    parts.append(self.hysac.embed_image(values))
                else:
                    parts.append(nn.functional.normalize(
                        self.clip.get_image_features(pixel_values=values), dim=-1))
        return torch.cat(parts).cpu()

    def read_images(self, files: Sequence[Path]) -> torch.Tensor:
        """``files`` read at the model's input size, as ``[N, 3, H, W]`` in [0, 1]."""
        from redteam.core.vision import images_tensor, read_resized

        return images_tensor([read_resized(Path(f), self.size) for f in files])

    def embed_files(self, files: Sequence[Path], batch_size: int = 256) -> torch.Tensor:
        """One embedding per image file, read batch by batch (a large gallery never sits in
        memory as pixels)."""
        return torch.cat([self.embed_images(self.read_images(files[start:start + batch_size]))
                          for start in range(0, len(files), batch_size)])

    def distances(self, queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        """``[queries, gallery]``: geodesic distance (HySAC) or cosine distance (CLIP)."""
        if self.hysac is not None:
            return pairwise_distance(queries, gallery, self.hysac.lorentz.c.detach().cpu())
        return 1.0 - queries @ gallery.T

    def nearest(self, queries: torch.Tensor, gallery: torch.Tensor, k: int) -> torch.Tensor:
        """Indices ``[queries, k]`` of the ``k`` nearest gallery items, nearest first."""
        return self.distances(queries, gallery).topk(min(k, len(gallery)), dim=-1,
                                                     largest=False).indices

    # HySAC only: the hierarchy's notion of safety.
    def _require_hysac(self) -> HySAC:
        if self.hysac is None or self.hysac.safety_radius is None:
            raise ValueError("a plain CLIP has no safety radius (only HySAC models do)")
        return self.hysac

    @property
    def curvature(self) -> torch.Tensor:
        return self._require_hysac().lorentz.c.detach().cpu()

    @property
    def safety_radius(self) -> float:
        return float(self._require_hysac().safety_radius)

    def radii(self, points: torch.Tensor) -> torch.Tensor:
        """Geodesic distance of each point from the origin."""
        return distance_to_origin(points, self.curvature)

    def classify_unsafe(self, points: torch.Tensor) -> torch.Tensor:
        return classify_unsafe(points, self.curvature, self.safety_radius)

    def traverse(self, points: torch.Tensor) -> torch.Tensor:
        return traverse(points, self.curvature, self.safety_radius)
