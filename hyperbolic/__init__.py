"""Lorentz-model hyperbolic geometry (``lorentz``) and HySAC's losses (``losses``). Issue 7 is
in progress: the model on a CLIP directory, training, the safety bounds and traversal are still
to come."""
