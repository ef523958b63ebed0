"""Hyperbolic safety-aware CLIP (HySAC, Poppi et al., CVPR 2025). In progress (issue 7):
``lorentz`` (geometry on geoopt), ``losses`` (HySAC's objective), ``model`` (a CLIP with the
Lorentz lift, saved as kind ``hysac``), ``data`` (ViSU quadruplets), ``train`` (validation split,
early stopping, the safety radius) and ``inference`` (unsafe classification, traversal,
retrieval) are here; LoRA for large CLIPs, the ``redteam hysac`` commands, the safety suite and
the demo are still to come."""
