"""Weight statistics reported every step (`weight/*` in metrics.jsonl; the plots read the same names)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def weight_stats(
    weights: torch.Tensor, domain_ids: torch.Tensor, domain_names: Sequence[str], with_values: bool = False
) -> dict[str, object]:
    """Statistics of the global batch's sample weights `weights` (N,), which sum to 1 for a normalised
    weighter. Reported on the *relative* scale `N * w` (uniform weights = 1 everywhere):

    - `weight/min`, `weight/max`: extremes of N*w;
    - `weight/entropy`: Shannon entropy (nats) of p = w / sum(w) (log N when uniform);
    - `weight/ess`: Kish effective sample size 1 / sum(p^2) (N when uniform, 1 when one sample takes all);
    - `weight/domain_mean/<domain>`: mean N*w over the samples of that domain in the batch;
    - `weight/values` (only when `with_values`): the list N*w, for histograms.
    Entropy/ESS need non-negative weights with a positive sum; otherwise they are NaN.
    (numpy on purpose: for a few dozen numbers it is several times faster than torch's per-op overhead.)"""
    w = weights.detach().cpu().double().numpy()
    n = w.size
    rel = w * n
    out: dict[str, object] = {"weight/min": float(rel.min()), "weight/max": float(rel.max())}
    total = float(w.sum())
    if total > 0 and bool((w >= 0).all()):
        p = w / total
        nz = p[p > 0]
        out["weight/entropy"] = float(-(nz * np.log(nz)).sum())
        out["weight/ess"] = float(1.0 / (p * p).sum())
    else:
        out["weight/entropy"] = out["weight/ess"] = math.nan
    domains = domain_ids.cpu().numpy()
    sums = np.bincount(domains, weights=rel, minlength=len(domain_names))
    counts = np.bincount(domains, minlength=len(domain_names))
    for d, name in enumerate(domain_names):
        if counts[d]:
            out[f"weight/domain_mean/{name}"] = float(sums[d] / counts[d])
    if with_values:
        out["weight/values"] = [round(float(v), 5) for v in rel]
    return out
