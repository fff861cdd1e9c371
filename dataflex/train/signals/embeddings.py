"""Sample embeddings: mean-pooled last hidden states of a model over each sample's non-pad tokens."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch

from dataflex.data.processor import collate
from dataflex.train.signals.losses import unwrap
from dataflex.utils.modes import eval_mode
from dataflex.utils.progress import progress

POOLINGS = ("mean", "position_weighted")


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """(B, H) pooled (B, T, H) states over the real tokens of `mask` (B, T). `mean`: plain average;
    `position_weighted`: the k-th real token weighs k (later tokens of a causal LM have seen more of the text:
    SGPT's weighted-mean pooling, as the original DataFlex ADAPT port)."""
    mask = mask.to(hidden.dtype)
    if pooling == "position_weighted":
        mask = mask * mask.cumsum(dim=1)
    elif pooling != "mean":
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


@torch.no_grad()
def sample_embeddings(
    model,
    data,
    indices: Sequence[int] | np.ndarray,
    *,
    batch_size: int,
    pad_token_id: int,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    pooling: str = "mean",
) -> torch.Tensor:
    """(len(indices), hidden) float32 embeddings of `data[i]` for i in indices, in order.

    Works for the training model (a causal LM: the last hidden state before the head) or any separate
    local encoder exposing `output_hidden_states`. L2-normalised unless `normalize=False`."""
    out = []
    # a causal LM computes its head on the last position only: the logits are not used here
    extra = (
        {"logits_to_keep": 1}
        if "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters
        else {}
    )
    with eval_mode(model), progress(len(indices), "embed", unit="sample") as bar:
        for start in range(0, len(indices), batch_size):
            batch = collate([data[int(i)] for i in indices[start : start + batch_size]], pad_token_id)
            mask = batch["attention_mask"].to(device)
            outputs = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=mask,
                output_hidden_states=True,
                **extra,
            )
            hidden = outputs.hidden_states[-1].float()
            out.append(pool_hidden(hidden, mask, pooling).cpu())
            bar.update(len(batch["input_ids"]))
    emb = torch.cat(out) if out else torch.zeros(0, 0)
    return torch.nn.functional.normalize(emb, dim=-1) if normalize and len(emb) else emb
