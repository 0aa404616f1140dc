"""One training run: its config, the step, the epoch loop, stopping, checkpoints, the distributed input."""
