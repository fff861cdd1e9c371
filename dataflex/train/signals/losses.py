"""Per-sample losses from one batched forward: token sums and supervised-token counts per row."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dataflex.data.processor import IGNORE_INDEX


@dataclass
class SampleLosses:
    token_sum: torch.Tensor
    """(B,) summed next-token loss over each sample's supervised tokens (keeps the graph)."""
    token_count: torch.Tensor
    """(B,) number of supervised tokens per sample."""
    token_loss: torch.Tensor | None = None
    """(B, T-1) per-token loss, 0 on masked tokens (keeps the graph); for token-level signals (DoReMi)."""

    @property
    def mean(self) -> torch.Tensor:
        """(B,) token-mean loss per sample; 0 for a sample with no supervised token."""
        return self.token_sum / self.token_count.clamp(min=1)


def per_sample_losses(logits: torch.Tensor, labels: torch.Tensor) -> SampleLosses:
    """Shifted causal-LM cross entropy, reduced per sample (padding and masked prompt tokens excluded)."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                                 ignore_index=IGNORE_INDEX, reduction="none").view(shift_labels.shape)
    mask = shift_labels != IGNORE_INDEX
    masked = token_loss * mask
    return SampleLosses(token_sum=masked.sum(dim=1), token_count=mask.sum(dim=1), token_loss=masked)
