"""Shared foundations with no TensorFlow: errors, options, locks, worker processes, progress, file I/O."""
