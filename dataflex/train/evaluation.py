"""Eval loss overall and per domain (token-weighted), sharded over ranks and summed."""

from __future__ import annotations

import math

import numpy as np
import torch

from dataflex.data.processor import collate
from dataflex.train.distributed import all_reduce_sum
from dataflex.train.signals.losses import per_sample_losses
from dataflex.utils.modes import eval_mode


def eval_rows(domain_ids: np.ndarray, max_per_domain: int | None) -> np.ndarray:
    """The eval rows used: all, or the first `max_per_domain` of each domain (deterministic)."""
    if max_per_domain is None:
        return np.arange(len(domain_ids))
    keep = [np.flatnonzero(domain_ids == d)[:max_per_domain] for d in np.unique(domain_ids)]
    return np.sort(np.concatenate(keep))


@torch.no_grad()
def evaluate(model, data, *, batch_size: int, pad_token_id: int, device: torch.device, rank: int = 0,
             world_size: int = 1, max_per_domain: int | None = None, lockstep: bool = False) -> dict[str, float]:
    """`lockstep`: every rank runs as many batches as the rank with the most rows (DeepSpeed ZeRO-3, where each
    forward gathers the weights from all ranks); the extra rows are computed and left out."""
    n_domains = len(data.domain_names)
    sums = torch.zeros(n_domains, dtype=torch.float64)
    counts = torch.zeros(n_domains, dtype=torch.float64)
    all_rows = eval_rows(data.domain_ids, max_per_domain)
    rows = all_rows[rank::world_size]
    longest = -(-len(all_rows) // world_size)
    keep = len(rows)
    if lockstep and keep < longest:
        rows = np.concatenate([rows, all_rows[:longest - keep]])
    with eval_mode(model):
        for start in range(0, len(rows), batch_size):
            batch = collate([data[i] for i in rows[start : start + batch_size]], pad_token_id)
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
            losses = per_sample_losses(logits, batch["labels"].to(device))
            used = slice(0, max(0, min(len(batch["domain_ids"]), keep - start)))  # not the lockstep extras
            domains = batch["domain_ids"][used]
            sums.index_add_(0, domains, losses.token_sum[used].double().cpu())
            counts.index_add_(0, domains, losses.token_count[used].double().cpu())
    sums, counts = all_reduce_sum(sums.to(device)).cpu(), all_reduce_sum(counts.to(device)).cpu()
    total = float(sums.sum() / counts.sum().clamp(min=1))
    metrics = {"eval/loss": total, "eval/ppl": math.exp(min(total, 50.0))}
    for d, name in enumerate(data.domain_names):
        if counts[d] > 0:
            loss = float(sums[d] / counts[d])
            metrics[f"eval/loss/{name}"] = loss
            metrics[f"eval/ppl/{name}"] = math.exp(min(loss, 50.0))
    return metrics
