"""CelebA gender (and any CelebA attribute) training engine for TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
