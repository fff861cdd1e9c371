"""Per-token losses for token-level weighters (rho1), flattened in one fixed order shared by the trainer
and the weighters: micro-batch by micro-batch, row by row, position by position, supervised tokens only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dataflex.data.processor import IGNORE_INDEX


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(losses (B, T-1), mask (B, T-1)) of the shifted causal-LM cross entropy; masked entries are 0."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    mask = shift_labels != IGNORE_INDEX
    return loss * mask, mask


def flat_token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(losses of the supervised tokens (T,), row of each token (T,)) in the shared order."""
    loss, mask = token_losses(logits, labels)
    rows = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(mask)
    return loss[mask], rows[mask]
