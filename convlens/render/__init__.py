"""Rendering: colour maps, grids, overlays, figures and HTML."""
