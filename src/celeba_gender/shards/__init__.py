"""The on-disk contract of the shards: attribute names, the record schema, the TFRecord codec, the manifest.

No TensorFlow at import."""
