"""Signals for components: per-sample losses, per-sample gradient features (batched, optionally Adam-
preconditioned and randomly projected, or Kronecker-projected without forming them) and sample embeddings."""

from dataflex.train.signals.embeddings import sample_embeddings
from dataflex.train.signals.gradients import (
    AdamPreconditioner,
    collect_gradient_features,
    gradient_features,
    per_sample_gradient_pieces,
    per_sample_gradients,
)
from dataflex.train.signals.kronecker import KroneckerProjector
from dataflex.train.signals.losses import SampleLosses, per_sample_losses
from dataflex.train.signals.projection import RandomProjector

__all__ = [
    "AdamPreconditioner",
    "KroneckerProjector",
    "RandomProjector",
    "SampleLosses",
    "collect_gradient_features",
    "gradient_features",
    "per_sample_gradient_pieces",
    "per_sample_gradients",
    "per_sample_losses",
    "sample_embeddings",
]
