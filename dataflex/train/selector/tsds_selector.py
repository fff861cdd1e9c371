"""`component=tsds`: TSDS (Liu et al. 2024, "TSDS: Data Selection for Task-Specific Model Finetuning"),
the KNN-KDE algorithm, computed inside the framework at each update.

Each of the M target examples transports probability mass 1/M to its nearest candidates (Euclidean
distance of L2-normalised embeddings). The optimum of the paper's objective (optimal-transport alignment
+ alpha-weighted diversity regulariser with kernel density estimates) gives candidate k of target j the
mass 1/(M s kde_jk) for its nearest candidates, up to a global level s found by a greedy water-filling:
targets extend their neighbour lists in order of the accumulated 1/kde, and the level stops rising when
(alpha / C) * sum_j cost_j >= (1 - alpha) * M, with cost_j = d_{j,K_j+1} * count_j - sum_{k<=K_j} d_jk / kde_jk.
Whatever mass a target has left goes to its next neighbour. Samples are drawn from the resulting
probabilities (with replacement, as the paper's code).

KDE: kde(x) = sum over the `kde_K` nearest candidates y (x included) of max(0, 1 - |x - y|^2 / sigma^2),
over the whole candidate pool as the paper defines it (the official code, using approximate search,
only looks among the prefetched neighbours and caps both neighbourhoods at candidates // 10; here the
search is exact and only capped by the pool size). Precomputed probabilities over the training set are
accepted with `probs_path`.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import torch

from dataflex.core.registry import register_selector
from dataflex.train.selector.base_selector import weighted_sample
from dataflex.train.selector.targeted import EmbeddingSelector, load_npy


def _nearest(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    d2 = torch.cdist(queries.double(), keys.double()).square()
    dist2, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
    return dist2.numpy(), idx.numpy()


def tsds_probabilities(queries: torch.Tensor, candidates: torch.Tensor, *, max_K: int, kde_K: int, sigma: float,
                       alpha: float, C: float) -> np.ndarray:
    """(N,) sampling probabilities of the candidates (rows of `candidates`) for the target `queries`."""
    n, m = len(candidates), len(queries)
    K = int(min(max_K, n))
    if K < 2:
        raise ValueError(f"tsds needs at least 2 candidates, got {n}")
    d2, nbr = _nearest(queries, candidates, K)
    dist = np.sqrt(np.maximum(d2, 0.0))
    if sigma == 0:
        kde_of = np.ones(n)
    else:
        kk = int(min(kde_K, n))
        cd2, _ = _nearest(candidates, candidates, kk)
        kde_of = np.maximum(0.0, 1.0 - cd2 / sigma ** 2).sum(axis=1)
    kde = kde_of[nbr]

    last = np.zeros(m, dtype=np.int64)
    count = 1.0 / kde[:, 0]
    weighted = dist[:, 0] / kde[:, 0]
    cost = np.zeros(m)
    total, level = 0.0, 0.0
    heap = [(float(count[j]), 0, j) for j in range(m)]
    heapq.heapify(heap)
    while heap:
        c, k, j = heapq.heappop(heap)
        level = c
        total -= cost[j]
        cost[j] = dist[j, k + 1] * c - weighted[j]
        total += cost[j]
        if alpha / C * total >= (1 - alpha) * m:
            break
        last[j] = k
        if k < K - 2:
            c2 = c + 1.0 / kde[j, k + 1]
            weighted[j] += dist[j, k + 1] / kde[j, k + 1]
            heapq.heappush(heap, (c2, k + 1, j))
    probs = np.zeros(n)
    for j in range(m):
        mass = 1.0 / (m * level * kde[j, : last[j] + 1])
        np.add.at(probs, nbr[j, : last[j] + 1], mass)
        probs[nbr[j, last[j] + 1]] += max(1.0 / m - mass.sum(), 0.0)
    probs = np.maximum(probs, 0.0)
    return probs / probs.sum()


@register_selector("tsds")
class TsdsSelector(EmbeddingSelector):
    selector_name = "tsds"

    def __init__(self, dataset, accelerator, data_collator, cache_dir, seed: int | None = None,
                 probs_path: str | None = None, max_K: int = 5000, kde_K: int = 1000, sigma: float = 0.75,
                 alpha: float = 0.5, C: float = 5.0, replacement: bool = True, **kw: Any) -> None:
        super().__init__(dataset, accelerator, data_collator, cache_dir, seed=seed, **kw)
        self.probs_path, self.max_K, self.kde_K = probs_path, int(max_K), int(kde_K)
        self.sigma, self.alpha, self.C, self.replacement = float(sigma), float(alpha), float(C), replacement

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        if self.probs_path:
            probs = load_npy(self.probs_path, "probs_path").astype(np.float64).reshape(-1)
            if len(probs) != len(self.dataset) or (probs < 0).any() or probs.sum() <= 0:
                raise ValueError(f"component.probs_path must hold {len(self.dataset)} non-negative probabilities.")
            cands = np.arange(len(self.dataset), dtype=np.int64)
        else:
            cands = self.candidate_ids(kwargs)
            t = self.target
            probs = tsds_probabilities(self.embed(model, t.data, t.ids), self.embed(model, self.ctx.train_data, cands),
                                       max_K=self.max_K, kde_K=self.kde_K, sigma=self.sigma, alpha=self.alpha,
                                       C=self.C)
        pos = weighted_sample(probs, num_samples, self.rng(step_id), self.replacement)
        self.last_scores = probs[pos]
        self.last_info = {"support": int((probs > 0).sum())}
        return [int(i) for i in cands[pos]]
