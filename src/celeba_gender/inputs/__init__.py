"""Shards -> batches: the one decode rule, the tf.data pipeline, the augmentation."""
