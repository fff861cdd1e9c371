"""`component=tsds`: TSDS (Liu et al. 2024, "TSDS: Data Selection for Task-Specific Model Finetuning"),
the KNN-KDE algorithm, computed inside the framework at each update.

Each of the M target examples transports probability mass 1/M to its nearest candidates (Euclidean
distance of L2-normalised embeddings). The optimum of the paper's objective (optimal-transport alignment
+ alpha-weighted diversity regulariser with kernel density estimates) gives candidate k of target j the
mass 1/(M s kde_jk) for its nearest candidates, up to a global level s found by a greedy water-filling:
targets extend their neighbour lists in order of the accumulated 1/kde, and the level stops rising when
(alpha / C) * sum_j cost_j >= (1 - alpha) * M, with cost_j = d_{j,K_j+1} * count_j - sum_{k<=K_j} d_jk /
kde_jk. Whatever mass a target has left goes to its next neighbour. Samples are drawn from the resulting
probabilities (with replacement, as the paper's code).

KDE: kde(x) = sum over the `kde_K` nearest candidates y (x included) of max(0, 1 - |x - y|^2 / sigma^2).

Against the authors' code (ZifanL/TSDS, tsds.py), on purpose:
- Neighbour search is exact and chunked: the N x N distance matrix is never formed (a 50k pool would need
  20-40 GB); each block of rows keeps only its top-k. With `faiss` installed an exact `IndexFlatL2` does
  the search instead (the code uses an approximate IVF index). Memory is checked before training
  (`check_memory`, like the gradient-feature check) and the error names the knob.
- K caps (`cap_neighbours=true`, default): as the code, max_K and kde_K are capped at N // 10 (at least 2
  and 1); `cap_neighbours=false` only caps them at N.
- The KDE neighbourhood is the whole candidate pool, as the paper defines it (the code looks only among
  the union of the targets' prefetched neighbours).
- sigma: the code's 0.75 assumes a real sentence encoder, whose L2-normalised embeddings lie about sqrt(2)
  apart; a training model's mean-pooled states are often far more compressed (the selection study's tiny
  model: median pairwise distance 0.51, 95% of pairs within 0.75), and then every candidate is a "near
  duplicate" of every other, the KDE is flat and TSDS samples almost uniformly. `sigma=null` (default)
  scales the code's value to the embedding space: sigma = 0.75 / sqrt(2) x the median pairwise distance
  of the candidates (0.75 exactly where embeddings are spread like a sentence encoder's). A warning is
  logged whenever the KDE is near-uniform (on average more than half of each point's kde_K neighbours
  inside the kernel), whatever sigma is. `sigma=0.75` gives the code's fixed value, `0` no KDE.
Precomputed probabilities over the training set are accepted with `probs_path`.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dataflex.config.component.select import TsdsSelectorConfig
from dataflex.core.registry import register_selector
from dataflex.train.selector.base_selector import weighted_sample
from dataflex.train.selector.targeted import EmbeddingSelector, load_npy
from dataflex.train.signals.memory import SAFETY, available_memory_bytes
from dataflex.utils.logging import logger

OFFICIAL_SIGMA = 0.75
"""The authors' default kernel width, for embeddings spread like a sentence encoder's (pairs ~sqrt(2)
apart)."""
BLOCK_BYTES = 1 << 27
"""Size of one block of the chunked distance computation (128 MiB of float64)."""
NEAR_UNIFORM = 0.5
"""Warn when the average point has more than this fraction of its kde_K neighbours inside the kernel."""


def block_rows(num_keys: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Query rows per block so that one (rows x num_keys) float64 distance block takes about `block_bytes`."""
    return max(1, block_bytes // (8 * max(num_keys, 1)))


def _faiss():
    try:
        import faiss  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return faiss


class NeighbourSearch:
    """Exact nearest-neighbour search over fixed `keys`: faiss `IndexFlatL2` (float32) when faiss is
    installed, else torch in blocks of query rows (float64), so no (queries x keys) matrix is ever held
    whole."""

    def __init__(self, keys: torch.Tensor, *, rows: int | None = None, use_faiss: bool | None = None) -> None:
        self.keys = keys
        self.rows = rows or block_rows(len(keys))
        faiss = _faiss() if use_faiss is not False else None
        self.index = None
        if faiss is not None:
            self.index = faiss.IndexFlatL2(int(keys.shape[1]))
            self.index.add(np.ascontiguousarray(keys.numpy(), dtype=np.float32))
        self._keys64 = keys.double() if self.index is None else None

    def search(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances and ids of each query's `k` nearest keys, ascending, (Q, k) each."""
        if self.index is not None:
            d2, idx = self.index.search(np.ascontiguousarray(queries.numpy(), dtype=np.float32), int(k))
            return np.maximum(d2.astype(np.float64), 0.0), idx.astype(np.int64)
        keys64 = self._keys64
        assert keys64 is not None  # (kept whenever there is no faiss index)
        dists, ids = [], []
        for start in range(0, len(queries), self.rows):
            block = torch.cdist(queries[start : start + self.rows].double(), keys64).square_()
            d2, idx = torch.topk(block, int(k), dim=1, largest=False, sorted=True)
            dists.append(d2.numpy())
            ids.append(idx.numpy())
        if not dists:
            return np.zeros((0, k)), np.zeros((0, k), dtype=np.int64)
        return np.concatenate(dists), np.concatenate(ids)


def nearest(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    *,
    rows: int | None = None,
    use_faiss: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Squared Euclidean distances and ids of each query's `k` nearest keys (see `NeighbourSearch`)."""
    return NeighbourSearch(keys, rows=rows, use_faiss=use_faiss).search(queries, k)


@dataclass
class Density:
    """KDE of every candidate, and how many of its kde_K neighbours fall inside the kernel (itself
    included)."""

    kde: np.ndarray
    inside: np.ndarray


def kernel_density(
    candidates: torch.Tensor,
    kde_K: int,
    sigma: float,
    *,
    rows: int | None = None,
    use_faiss: bool | None = None,
) -> Density:
    """kde(x) = sum over the kde_K nearest candidates y of max(0, 1 - |x - y|^2 / sigma^2), block by block."""
    n = len(candidates)
    if sigma == 0:
        return Density(np.ones(n), np.ones(n))
    search = NeighbourSearch(candidates, rows=rows, use_faiss=use_faiss)
    kde, inside = np.empty(n), np.empty(n)
    for start in range(0, n, search.rows):
        d2, _ = search.search(candidates[start : start + search.rows], kde_K)
        kernel = np.maximum(0.0, 1.0 - d2 / sigma**2)
        kde[start : start + len(d2)] = kernel.sum(axis=1)
        inside[start : start + len(d2)] = (kernel > 0).sum(axis=1)
    return Density(kde, inside)


def near_uniform_warning(density: Density, kde_K: int, sigma: float, candidates: torch.Tensor) -> str | None:
    """A message when the KDE is near-uniform (on average more than NEAR_UNIFORM of each point's kde_K
    neighbours inside the kernel): TSDS then samples almost uniformly among the targets' neighbours."""
    inside = float(density.inside.mean())
    if sigma <= 0 or inside <= NEAR_UNIFORM * kde_K:
        return None
    return (
        f"tsds: the density estimate is near-uniform: on average {inside:.0f} of each candidate's "
        f"{kde_K} nearest neighbours lie within sigma={sigma:.3g} (median pairwise distance "
        f"{median_pairwise_distance(candidates):.3g}), so TSDS samples almost uniformly among the targets' "
        "neighbours. Lower component.sigma (or leave it null: scaled to the embedding space)."
    )


def median_pairwise_distance(x: torch.Tensor, max_points: int = 1000, seed: int = 0) -> float:
    """Median Euclidean distance between distinct points of (a seeded sample of at most `max_points` of) x."""
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    d = torch.pdist(x.double())
    return float(d.median()) if len(d) else 0.0


def scaled_sigma(candidates: torch.Tensor, seed: int = 0) -> float:
    """The authors' sigma (0.75 for embeddings ~sqrt(2) apart) scaled to this embedding space."""
    return OFFICIAL_SIGMA / math.sqrt(2.0) * median_pairwise_distance(candidates, seed=seed)


def capped_neighbours(n: int, max_K: int, kde_K: int, cap: bool) -> tuple[int, int]:
    """(K, kde_K) actually used for n candidates: the code's caps at n // 10 (>= 2 and >= 1) or only at n."""
    if cap:
        return int(min(max_K, max(2, n // 10), n)), int(min(kde_K, max(1, n // 10), n))
    return int(min(max_K, n)), int(min(kde_K, n))


def tsds_memory_bytes(num_candidates: int, num_targets: int, dim: int, K: int) -> int:
    """Peak of a TSDS scoring pass: the embeddings, the targets' neighbour lists, one distance block
    (and its top-k copy) and the per-candidate densities."""
    n = max(num_candidates, 1)
    block = block_rows(n) * n * 8
    return 4 * (n + num_targets) * dim + 16 * num_targets * K + 2 * min(block, n * n * 8) + 16 * n


def tsds_probabilities(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    *,
    max_K: int,
    kde_K: int,
    sigma: float,
    alpha: float,
    C: float,
    density: Density | None = None,
    rows: int | None = None,
) -> np.ndarray:
    """(N,) sampling probabilities of the candidates (rows of `candidates`) for the target `queries`."""
    n, m = len(candidates), len(queries)
    K = int(min(max_K, n))
    if K < 2:
        raise ValueError(f"tsds needs at least 2 candidates, got {n}")
    d2, nbr = nearest(queries, candidates, K, rows=rows)
    dist = np.sqrt(np.maximum(d2, 0.0))
    if density is None:
        density = kernel_density(candidates, int(min(kde_K, n)), sigma, rows=rows)
    kde = density.kde[nbr]

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

    Config = TsdsSelectorConfig

    def check_memory(self, model, num_candidates: int, device) -> None:
        """Fails before training, naming the knobs, when one scoring pass cannot fit in free memory."""
        if self.config.probs_path:
            return
        dim = int(getattr(getattr(model, "config", None), "hidden_size", 0) or 1024)
        targets = self.config.target_max_samples or 1000
        K, _ = capped_neighbours(
            num_candidates, self.config.max_K, self.config.kde_K, self.config.cap_neighbours
        )
        need = tsds_memory_bytes(num_candidates, targets, dim, K)
        available = available_memory_bytes(device)
        if need > SAFETY * available:
            gib = 1 << 30
            raise MemoryError(
                f"tsds scoring needs about {need / gib:.1f} GiB for {num_candidates:,} candidates "
                f"(embeddings of width {dim}, {targets} targets x {K} neighbours, one distance block) "
                f"but only {available / gib:.1f} GiB is free on {device}. Lower "
                "trainer.candidate_pool_size or component.max_K / component.target_max_samples."
            )

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        if self.config.probs_path:
            probs = load_npy(self.config.probs_path, "probs_path").astype(np.float64).reshape(-1)
            if len(probs) != len(self.dataset) or (probs < 0).any() or probs.sum() <= 0:
                raise ValueError(
                    f"component.probs_path must hold {len(self.dataset)} non-negative probabilities."
                )
            cands = np.arange(len(self.dataset), dtype=np.int64)
            info: dict[str, Any] = {}
        else:
            cands = self.candidate_ids(kwargs)
            t = self.target
            queries, keys = self.embed(model, t.data, t.ids), self.embed(model, self.ctx.train_data, cands)
            K, kde_K = capped_neighbours(
                len(cands), self.config.max_K, self.config.kde_K, self.config.cap_neighbours
            )
            sigma = (
                scaled_sigma(keys, seed=int(self.seed or 0))
                if self.config.sigma is None
                else self.config.sigma
            )
            density = kernel_density(keys, kde_K, sigma)
            warning = near_uniform_warning(density, kde_K, sigma, keys)
            if warning:
                logger.warning(warning)
            inside = float(density.inside.mean())
            probs = tsds_probabilities(
                queries,
                keys,
                max_K=K,
                kde_K=kde_K,
                sigma=sigma,
                alpha=self.config.alpha,
                C=self.config.C,
                density=density,
            )
            info = {"sigma": sigma, "K": K, "kde_K": kde_K, "near_duplicates_mean": inside - 1}
        pos = weighted_sample(probs, num_samples, self.rng(step_id), self.config.replacement)
        self.last_scores = probs[pos]
        self.last_info = {"support": int((probs > 0).sum()), **info}
        return [int(i) for i in cands[pos]]
