"""What the loop tells a strategy about the current optimizer step."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class StepContext:
    step: int
    """0-based index of the optimizer step being computed."""
    indices: np.ndarray
    """The global batch: item ids of every micro-batch on every rank, in order."""
    global_tokens: int
    """Supervised tokens in the whole global batch (all micro-batches, all ranks)."""
    global_samples: int
    world_size: int
    rank: int
    # Filled while the step runs (detached, this rank's micro-batches):
    sample_ids: list[torch.Tensor] = field(default_factory=list)
    domain_ids: list[torch.Tensor] = field(default_factory=list)
    sample_loss: list[torch.Tensor] = field(default_factory=list)
    """Token-mean loss per sample."""
    token_sum: list[torch.Tensor] = field(default_factory=list)
    token_count: list[torch.Tensor] = field(default_factory=list)
