"""Comparison studies: grids of train.py runs and their tables."""
