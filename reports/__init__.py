"""Rendering of run results: HTML report, inline SVG charts, demo index."""
