"""Sample embeddings: mean-pooled last hidden states of a model over each sample's non-pad tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dataflex.data.processor import collate
from dataflex.utils.modes import eval_mode


@torch.no_grad()
def sample_embeddings(model, data, indices: Sequence[int], *, batch_size: int, pad_token_id: int,
                      device: torch.device | str = "cpu", normalize: bool = True) -> torch.Tensor:
    """(len(indices), hidden) float32 embeddings of `data[i]` for i in indices, in order.

    Works for the training model (a causal LM: the last hidden state before the head) or any separate
    local encoder exposing `output_hidden_states`. L2-normalised unless `normalize=False`."""
    out = []
    with eval_mode(model):
        for start in range(0, len(indices), batch_size):
            batch = collate([data[int(i)] for i in indices[start : start + batch_size]], pad_token_id)
            mask = batch["attention_mask"].to(device)
            outputs = model(input_ids=batch["input_ids"].to(device), attention_mask=mask, output_hidden_states=True)
            hidden = outputs.hidden_states[-1].float()
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            out.append(pooled.cpu())
    emb = torch.cat(out) if out else torch.zeros(0, 0)
    return torch.nn.functional.normalize(emb, dim=-1) if normalize and len(emb) else emb
