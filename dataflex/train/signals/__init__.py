"""Signals the loop computes for components: per-sample losses (and, later, gradient features, embeddings)."""

from dataflex.train.signals.losses import SampleLosses, per_sample_losses

__all__ = ["SampleLosses", "per_sample_losses"]
