"""The run directory: what a run records, its status, history, lock and TensorBoard events."""
