"""Lorentz-model hyperbolic geometry (``lorentz``), the base of HySAC (issue 7: the model, its
losses, training and traversal are still to come)."""
