"""`component=near`: the nearest training candidates of the target examples in embedding space, taken
round-robin over the targets: the nearest candidate of every target first (target order), then the second
nearest of every target, ..., skipping candidates already taken (as the original DataFlex NEAR selector).

Embeddings are computed inside the framework at each update (mean-pooled last hidden state of the
training model, or of a local encoder with `encoder_path`); the original's precomputed `(targets x K)`
index file is still accepted with `indices_path` (then the candidate pool is not used).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dataflex.config.component.select import NearSelectorConfig
from dataflex.core.registry import register_selector
from dataflex.train.selector.targeted import EmbeddingSelector, load_npy


def round_robin_neighbours(ranked: np.ndarray, k: int) -> np.ndarray:
    """First `k` distinct entries of a (targets x K) matrix of candidates ranked per target, read column
    by column (rank 0 of every target, then rank 1, ...)."""
    seq = np.asarray(ranked).T.reshape(-1)
    _, first = np.unique(seq, return_index=True)
    distinct = seq[np.sort(first)]
    if len(distinct) < k:
        raise ValueError(
            f"near: only {len(distinct)} distinct neighbours available for {k} samples; use more "
            "candidates (trainer.candidate_pool_size) or a longer indices file."
        )
    return distinct[:k]


@register_selector("near")
class NearSelector(EmbeddingSelector):
    selector_name = "near"

    Config = NearSelectorConfig

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        if self.config.indices_path:
            ranked = load_npy(self.config.indices_path, "indices_path")
            if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
                raise ValueError(
                    f"component.indices_path must hold a 2-D integer array (targets x K), got "
                    f"{ranked.dtype} {ranked.shape}."
                )
            if ranked.min() < 0 or ranked.max() >= len(self.dataset):
                raise ValueError(f"component.indices_path has ids outside [0, {len(self.dataset)}).")
            picked = round_robin_neighbours(ranked, num_samples)
            rank_of = {int(i): r for r, i in enumerate(picked)}
            self.last_scores = np.asarray([1.0 / (1 + rank_of[int(i)]) for i in picked])
            self.last_info = {"source": "indices_path"}
            return [int(i) for i in picked]
        cands = self.candidate_ids(kwargs)
        t = self.target
        query = self.embed(model, t.data, t.ids)
        keys = self.embed(model, self.ctx.train_data, cands)
        sims = (query @ keys.T).numpy()
        ranked = np.argsort(-sims, axis=1, kind="stable")
        pos = round_robin_neighbours(ranked, num_samples)
        self.last_scores = sims.max(axis=0)[pos]
        self.last_info = {"targets": len(t.ids)}
        return [int(i) for i in cands[pos]]
