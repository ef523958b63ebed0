"""Lorentz-model hyperbolic geometry and HySAC (comes with its own issue)."""
