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
    input_tokens: int = 0
    """Tokens (incl. prompt) this rank processed in the step."""
    skipped: bool = False
    """The update was dropped (non-finite loss with nan_policy=skip_step)."""
    # Filled while the step runs (detached, this rank's micro-batches):
    sample_ids: list[torch.Tensor] = field(default_factory=list)
    domain_ids: list[torch.Tensor] = field(default_factory=list)
    sample_loss: list[torch.Tensor] = field(default_factory=list)
    """Token-mean loss per sample."""
    token_sum: list[torch.Tensor] = field(default_factory=list)
    token_count: list[torch.Tensor] = field(default_factory=list)

    def record(self, batch: dict[str, torch.Tensor], losses) -> None:
        """Keeps the detached per-sample signals of one micro-batch."""
        self.sample_ids.append(batch["sample_ids"])
        self.domain_ids.append(batch["domain_ids"])
        self.token_sum.append(losses.token_sum.detach().cpu())
        self.token_count.append(losses.token_count.detach().cpu())
        self.sample_loss.append(losses.mean.detach().cpu())

    def gathered(self) -> dict[str, torch.Tensor]:
        """This step's per-sample signals of the *global* batch (every micro-batch of every rank, rank order):
        sample_ids, domain_ids, sample_loss (token mean), token_sum, token_count."""
        from dataflex.train.distributed import all_gather_cat

        fields = ("sample_ids", "domain_ids", "sample_loss", "token_sum", "token_count")
        return {name: all_gather_cat(torch.cat(getattr(self, name))) for name in fields}
