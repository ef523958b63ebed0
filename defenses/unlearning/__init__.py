"""Unlearning methods (gradient ascent, gradient difference, NPO) used by `redteam unlearn` and the zoo."""
