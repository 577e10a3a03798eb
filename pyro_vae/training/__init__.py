"""Training: SVI with one checkpoint per epoch and exact resume, the run folder and its lock, more
than one device, TensorBoard."""
