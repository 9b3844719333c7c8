"""Training one run: compiled steps, mask statistics, checkpoints, and the epoch loop."""
