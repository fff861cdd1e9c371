"""The kept rows' update from the candidate pass (grad_norm, greats): no second forward + backward.

Those selectors already ran a forward and a backward to every layer output over the B candidates (ghost
factors: each linear layer's inputs a_i and output gradients g_i per row, embeddings' token ids, the
materialised per-sample gradients of vectors). The training loss of the kept rows is a weighted sum of
their per-row token-mean losses, so its gradient is the same weighted sum of their per-row gradients:
sum_i w_i a_i^T g_i per linear layer (`GhostGradients.batch_gradient`), with w_i = n_i / N (token
reduction: n_i supervised tokens of row i, N of the batch) or 1 / b (sample reduction). That is the
gradient the loop's backward would compute IF the candidate forward is the training forward: same weights
(it is: the choice is made just before the step), and neither dropout nor autocast nor packing makes the
training forward differ. `blocker` names what breaks that; then the loop trains the b rows as usual.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dataflex.train.signals.ghost import GhostGradients
from dataflex.train.signals.losses import SampleLosses


def active_dropout(model: nn.Module) -> str | None:
    """The first dropout that would make a training forward differ from the eval-mode candidate pass."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{name or type(module).__name__} (p={module.p})"
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    settings = to_dict() if callable(to_dict) else {}
    for key, value in settings.items():
        if ("dropout" in key or "pdrop" in key) and isinstance(value, float) and value > 0:
            return f"model config {key}={value}"
    return None


def blocker(model: nn.Module, accelerator: Any, *, pack_capacity: int | None) -> str | None:
    """Why the candidate pass cannot stand in for the training forward + backward here (None: it can)."""
    if int(accelerator.num_processes) > 1:
        return "several processes (each rank's share would need the gradient all-reduce DDP does)"
    if accelerator.distributed_type.name not in ("NO", "MULTI_CPU", "MULTI_GPU"):
        return f"{accelerator.distributed_type.name} owns the backward"
    if str(accelerator.mixed_precision) != "no":
        return f"mixed precision {accelerator.mixed_precision} (the training forward runs under autocast)"
    if pack_capacity:
        return "data.packing (the training rows are packed, the candidates padded)"
    dropout = active_dropout(model)
    if dropout:
        return f"active dropout: {dropout}"
    return None


def assemble_update(
    ghost: GhostGradients,
    positions: np.ndarray,
    micro_batches: list[dict[str, torch.Tensor]],
    *,
    token_reduction: bool,
    global_tokens: int,
    global_samples: int,
) -> list[SampleLosses]:
    """Adds the kept rows' (candidate `positions`, in the loop's order) loss gradient to `.grad` and returns
    each micro-batch's detached losses (the candidate forward's)."""
    losses = ghost.losses
    assert losses is not None
    rows = torch.as_tensor(positions, dtype=torch.long)
    count = losses.token_count.index_select(0, rows.to(losses.token_count.device)).cpu().float()
    if token_reduction:
        weights = count / max(global_tokens, 1)
    else:
        weights = torch.full((len(rows),), 1.0 / global_samples)
    for param, grad in ghost.batch_gradient(rows, weights):
        grad = grad.to(param.dtype)
        param.grad = grad if param.grad is None else param.grad + grad
    out, start = [], 0
    for mb in micro_batches:
        part = rows[start : start + len(mb["sample_ids"])]
        start += len(part)
        out.append(
            SampleLosses(
                losses.token_sum.index_select(0, part.to(losses.token_sum.device)).cpu(),
                losses.token_count.index_select(0, part.to(losses.token_count.device)).cpu(),
            )
        )
    return out
