"""Hyperbolic safety-aware CLIP (HySAC, Poppi et al., CVPR 2025).

``lorentz`` geometry on geoopt; ``losses`` HySAC's objective; ``model`` a CLIP with the Lorentz
lift, saved as kind ``hysac``; ``data`` ViSU quadruplets; ``train`` fine-tuning (full or LoRA)
with a validation split, early stopping and the safety radius; ``inference`` unsafe
classification, traversal and retrieval; ``encoder`` one interface to a plain CLIP and a HySAC
for the safety suite and ``redteam hysac``."""

HYSAC_CONFIG = "hysac_config.json"  # the file that makes a CLIP folder a HySAC one
