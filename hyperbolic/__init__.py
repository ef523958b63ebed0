"""Hyperbolic safety-aware CLIP (HySAC, Poppi et al., CVPR 2025). In progress (issue 7):
``lorentz`` (geometry on geoopt), ``losses`` (HySAC's objective), ``model`` (a CLIP with the
Lorentz lift, saved as kind ``hysac``) and ``data`` (ViSU quadruplets) are here; training with
the safety bound, traversal, the CLI and the safety suite are still to come."""
