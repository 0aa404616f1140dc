"""CelebA as users have it -> de-duplicated, balanced, leak-free TFRecord shards. No TensorFlow."""
