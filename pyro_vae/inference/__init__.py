"""Inference building blocks: guide heads, ELBO estimators, honest test metrics, diagnostics and
the label metrics of conditional models."""
