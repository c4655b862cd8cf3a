"""Figures as PNG: activation panels, fits, feature maps and image grids."""
