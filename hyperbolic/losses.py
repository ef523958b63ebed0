"""HySAC's training objective (Poppi et al., CVPR 2025), on MERU's hyperbolic CLIP losses.

Every row of a batch is a ViSU quadruplet: a safe caption, an unsafe caption, a safe image and an
unsafe image about the same scene. Four contrastive terms align the matching rows with logits
−distance × logit scale (safe text ↔ safe image, unsafe text ↔ unsafe image, safe text ↔ unsafe
image, unsafe text ↔ safe image), and entailment-cone terms order them: each caption entails its
image, and the safe image's cone contains the unsafe caption, which pushes unsafe content farther
from the origin than the safe content it elaborates.
"""

from __future__ import annotations

import torch
from torch import nn

from hyperbolic.lorentz import entailment_loss, pairwise_distance

ENTAILMENT_WEIGHT = 0.2  # MERU's weight of the entailment terms


def contrastive_loss(text: torch.Tensor, image: torch.Tensor, c: torch.Tensor | float,
                     logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching rows, logits = −distance × ``logit_scale``."""
    logits = -pairwise_distance(text, image, c) * logit_scale
    targets = torch.arange(len(text), device=text.device)
    return (nn.functional.cross_entropy(logits, targets)
            + nn.functional.cross_entropy(logits.T, targets)) / 2


def hysac_loss(safe_text: torch.Tensor, unsafe_text: torch.Tensor, safe_image: torch.Tensor,
               unsafe_image: torch.Tensor, c: torch.Tensor | float,
               logit_scale: torch.Tensor | float,
               entailment_weight: float = ENTAILMENT_WEIGHT) -> tuple[torch.Tensor, dict]:
    """The total loss of one batch of quadruplets (points on the hyperboloid) and its terms."""
    terms = {
        "safe_text-safe_image": contrastive_loss(safe_text, safe_image, c, logit_scale),
        "unsafe_text-unsafe_image": contrastive_loss(unsafe_text, unsafe_image, c, logit_scale),
        "safe_text-unsafe_image": contrastive_loss(safe_text, unsafe_image, c, logit_scale),
        "unsafe_text-safe_image": contrastive_loss(unsafe_text, safe_image, c, logit_scale),
        "entail safe_text>safe_image": entailment_loss(safe_text, safe_image, c),
        "entail unsafe_text>unsafe_image": entailment_loss(unsafe_text, unsafe_image, c),
        "entail safe_image>unsafe_text": entailment_loss(safe_image, unsafe_text, c),
    }
    contrastive = sum(v for k, v in terms.items() if not k.startswith("entail"))
    entailment = sum(v for k, v in terms.items() if k.startswith("entail"))
    return (contrastive + entailment_weight * entailment,
            {k: float(v.detach()) for k, v in terms.items()})
