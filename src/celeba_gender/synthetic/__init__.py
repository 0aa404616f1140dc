"""A synthetic CelebA in CelebA's own layout (procedurally drawn faces). No TensorFlow."""
