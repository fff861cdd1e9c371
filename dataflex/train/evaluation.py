"""Eval loss overall and per domain (token-weighted), sharded over ranks and summed."""

from __future__ import annotations

import math

import numpy as np
import torch

from dataflex.data.processor import collate
from dataflex.train.distributed import all_reduce_sum
from dataflex.train.signals.batching import auto_max_tokens, score_in_buckets
from dataflex.train.signals.losses import loss_settings, model_losses
from dataflex.utils.modes import eval_mode


def eval_rows(domain_ids: np.ndarray, max_per_domain: int | None) -> np.ndarray:
    """The eval rows used: all, or the first `max_per_domain` of each domain (deterministic)."""
    if max_per_domain is None:
        return np.arange(len(domain_ids))
    keep = [np.flatnonzero(domain_ids == d)[:max_per_domain] for d in np.unique(domain_ids)]
    return np.sort(np.concatenate(keep))


def scoring_grad_mode(lockstep: bool = False):
    """`torch.inference_mode` for forward-only passes; plain `no_grad` under DeepSpeed ZeRO-3 (`lockstep`),
    whose parameter gathering must not create inference tensors the next training step would use."""
    return torch.no_grad() if lockstep else torch.inference_mode()


def scoring_max_tokens(model, data, rows, max_tokens: int | None, device) -> int:
    """The configured token budget, or one sized from free memory for the longest of `rows`."""
    if max_tokens:
        return int(max_tokens)
    width = max((len(data[int(i)].input_ids) for i in rows), default=1)
    return auto_max_tokens(model, device, width, full_logits=loss_settings().impl == "plain")


def domain_loss_sums(
    model,
    data,
    rows: np.ndarray,
    *,
    pad_token_id: int,
    device,
    max_tokens: int,
    max_rows: int | None,
    fixed_batches: bool = False,
) -> torch.Tensor:
    """(len(rows), 3): token loss sum, supervised-token count and domain of each row, in the order of `rows`.
    Length-bucketed under the token budget, or in plain consecutive batches of `max_rows` when every rank
    must run the same number of forwards (`fixed_batches`)."""

    def fn(batch):
        losses = model_losses(model, batch, device)
        return torch.stack(
            [
                losses.token_sum.double().cpu(),
                losses.token_count.double().cpu(),
                batch["domain_ids"].double(),
            ],
            dim=1,
        )

    with eval_mode(model), scoring_grad_mode(fixed_batches):
        if not fixed_batches:
            return score_in_buckets(
                fn,
                data,
                rows,
                pad_token_id=pad_token_id,
                max_tokens=max_tokens,
                max_rows=max_rows,
                desc="eval",
            )
        size = max_rows or 64
        out = [
            fn(collate([data[int(i)] for i in rows[s : s + size]], pad_token_id))
            for s in range(0, len(rows), size)
        ]
        return torch.cat(out) if out else torch.zeros(0, 3, dtype=torch.float64)


def evaluate(
    model,
    data,
    *,
    batch_size: int | None,
    pad_token_id: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    max_per_domain: int | None = None,
    lockstep: bool = False,
    max_tokens: int | None = None,
) -> dict[str, float]:
    """`batch_size` caps the rows, `max_tokens` the padded tokens of a batch (None: sized from free memory).
    `lockstep`: every rank runs as many batches as the rank with the most rows (DeepSpeed ZeRO-3, where each
    forward gathers the weights from all ranks); the extra rows are computed and left out."""
    n_domains = len(data.domain_names)
    sums = torch.zeros(n_domains, dtype=torch.float64)
    counts = torch.zeros(n_domains, dtype=torch.float64)
    all_rows = eval_rows(data.domain_ids, max_per_domain)
    rows = all_rows[rank::world_size]
    longest = -(-len(all_rows) // world_size)
    keep = len(rows)
    if lockstep and keep < longest:
        rows = np.concatenate([rows, all_rows[: longest - keep]])
    budget = scoring_max_tokens(model, data, rows, max_tokens, device)
    per_row = domain_loss_sums(
        model,
        data,
        rows,
        pad_token_id=pad_token_id,
        device=device,
        max_tokens=budget,
        max_rows=batch_size,
        fixed_batches=lockstep,
    )[:keep]  # not the lockstep extras
    if len(per_row):
        domains = per_row[:, 2].long()
        sums.index_add_(0, domains, per_row[:, 0])
        counts.index_add_(0, domains, per_row[:, 1])
    sums, counts = all_reduce_sum(sums.to(device)).cpu(), all_reduce_sum(counts.to(device)).cpu()
    total = float(sums.sum() / counts.sum().clamp(min=1))
    metrics = {"eval/loss": total, "eval/ppl": math.exp(min(total, 50.0))}
    for d, name in enumerate(data.domain_names):
        if counts[d] > 0:
            loss = float(sums[d] / counts[d])
            metrics[f"eval/loss/{name}"] = loss
            metrics[f"eval/ppl/{name}"] = math.exp(min(loss, 50.0))
    return metrics
