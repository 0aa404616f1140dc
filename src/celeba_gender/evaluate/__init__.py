"""Evaluation reports: metrics of a split, figures, galleries, Grad-CAM figures, published numbers."""
