"""The HySAC model: a Hugging Face ``CLIPModel`` whose embeddings live on a Lorentz hyperboloid.

CLIP's projected text and image features are scaled (learnable α per modality) and lifted with
the exponential map at the origin onto the hyperboloid of learnable curvature −c (MERU, Desai
et al. 2023; HySAC, Poppi et al. 2025). Similarity is negative geodesic distance × a learnable
logit scale. A saved HySAC folder is the CLIP folder (safetensors) plus ``hysac_config.json``
with the hyperbolic parameters and the safety radius, which ``redteam`` detects as kind
``hysac``. Training (``train``) sets the safety radius; ``inference`` uses it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyperbolic import HYSAC_CONFIG
from hyperbolic.lorentz import LorentzEmbedding, pairwise_distance
from redteam.core.errors import InputError

MAX_LOGIT_SCALE = 100.0


class HySAC(nn.Module):
    """``clip`` (a ``CLIPModel``) with the Lorentz lift, the logit scale and the safety radius."""

    def __init__(self, clip: nn.Module, curvature: float = 1.0,
                 learn_curvature: bool = True) -> None:
        super().__init__()
        self.clip = clip
        self.lorentz = LorentzEmbedding(int(clip.config.projection_dim), curvature,
                                        learn_curvature)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.safety_radius: float | None = None  # set from the training data (see training)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def embed_text(self, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        features = self.clip.get_text_features(input_ids=input_ids,
                                               attention_mask=attention_mask)
        return self.lorentz(features, "text")

    def embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.lorentz(self.clip.get_image_features(pixel_values=pixel_values), "image")

    def similarity(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Logits ``[texts, images]``: −geodesic distance × logit scale."""
        return -pairwise_distance(text, image, self.lorentz.c) * self.logit_scale

    def hyperbolic_config(self) -> dict[str, Any]:
        return {"curvature": self.lorentz.c.item(), "bounds": list(self.lorentz.bounds),
                "log_c": self.lorentz.log_c.item(),
                "log_alpha_text": self.lorentz.log_alpha_text.item(),
                "log_alpha_image": self.lorentz.log_alpha_image.item(),
                "log_logit_scale": self.log_logit_scale.item(),
                "safety_radius": self.safety_radius}

    def save(self, folder: Path) -> None:
        """Write the CLIP weights (safetensors) and ``hysac_config.json`` into ``folder``."""
        from redteam.core.fileio import atomic_write_json

        self.clip.save_pretrained(folder, safe_serialization=True)
        atomic_write_json(Path(folder) / HYSAC_CONFIG, self.hyperbolic_config())

    @classmethod
    def from_clip_and_config(cls, clip: nn.Module, folder: Path) -> HySAC:
        """Rebuild a saved HySAC from its loaded CLIP and its ``hysac_config.json``."""
        from redteam.core.untrusted import read_json_object

        path = Path(folder) / HYSAC_CONFIG
        if not path.is_file():
            raise InputError(f"{folder}: not a HySAC folder (no {HYSAC_CONFIG})")
        config = read_json_object(path, "HySAC config")
        try:
            model = cls(clip)
            model.lorentz.bounds = tuple(float(b) for b in config["bounds"])
            with torch.no_grad():
                model.lorentz.log_c.fill_(float(config["log_c"]))
                model.lorentz.log_alpha_text.fill_(float(config["log_alpha_text"]))
                model.lorentz.log_alpha_image.fill_(float(config["log_alpha_image"]))
                model.log_logit_scale.fill_(float(config["log_logit_scale"]))
            radius = config.get("safety_radius")
            model.safety_radius = None if radius is None else float(radius)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: not a valid HySAC config ({exc})") from None
        return model.eval()
