"""The architecture registry: backbones, heads, preprocessing, recipes."""
