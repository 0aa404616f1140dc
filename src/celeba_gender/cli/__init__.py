"""absl flag definitions for the launchers. Only launchers import these; library code takes configs."""
