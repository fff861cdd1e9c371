"""`component=cluster_less`: LESS at a fraction of the gradient cost (as the original DataFlex's
ClusterLessSelector): the training set is clustered once (k-means on the training model's mean-pooled
embeddings at the first update); at each update a few seeded representatives of every cluster present in
the candidates get LESS features; a cluster's feature is the normalised mean of its representatives',
and every candidate gets its cluster's LESS score. Top-k, ties (same cluster) broken at random (seeded).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dataflex.config.component.select import ClusterLessSelectorConfig
from dataflex.core.registry import register_selector
from dataflex.train.selector.base_selector import top_k
from dataflex.train.selector.less_selector import less_scores
from dataflex.train.selector.scoring import embeddings
from dataflex.train.selector.targeted import GradientSelector


def kmeans(x: torch.Tensor, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means (Euclidean), centres initialised on k distinct random points; an empty cluster is
    re-seeded on a random point. Returns the cluster id of each row."""
    x = x.float()
    n = len(x)
    k = max(1, min(k, n))
    centres = x[torch.as_tensor(rng.choice(n, size=k, replace=False))].clone()
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(max(1, iters)):
        assign = (2 * x @ centres.T - centres.square().sum(1)).argmax(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        empty = counts == 0
        centres = sums / counts.clamp(min=1).unsqueeze(1).float()
        if empty.any():
            centres[empty] = x[torch.as_tensor(rng.choice(n, size=int(empty.sum()), replace=False))]
    return (2 * x @ centres.T - centres.square().sum(1)).argmax(1).numpy()


@register_selector("cluster_less")
class ClusterLessSelector(GradientSelector):
    selector_name = "cluster_less"

    Config = ClusterLessSelectorConfig
    assignments: np.ndarray | None = None

    def _cluster(self, model) -> np.ndarray:
        ids = np.arange(len(self.dataset), dtype=np.int64)
        emb = embeddings(model, self.ctx.train_data, ids, self.ctx)
        k = self.config.num_clusters or math.ceil(len(ids) / self.config.cluster_size)
        return kmeans(emb, k, self.config.kmeans_iters, self.rng(0xC1))

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        cands = self.candidate_ids(kwargs)
        if num_samples > len(cands):
            raise ValueError(
                f"cluster_less: {num_samples} samples requested from {len(cands)} candidates; enlarge "
                "trainer.candidate_pool_size or lower trainer.update_step."
            )
        if self.assignments is None:
            self.assignments = self._cluster(model)
        rng = self.rng(step_id)
        cand_clusters = self.assignments[cands]
        clusters = np.unique(cand_clusters)
        reps, rep_cluster = [], []
        for c in clusters:
            members = cands[cand_clusters == c]
            take = rng.choice(
                len(members), size=min(self.config.samples_per_cluster, len(members)), replace=False
            )
            reps.extend(members[take].tolist())
            rep_cluster.extend([int(c)] * len(take))
        val = self.target_features(model)
        rep_feats = self.train_features(model, np.asarray(reps, dtype=np.int64), kwargs.get("optimizer"))
        slot = {int(c): i for i, c in enumerate(clusters)}
        index = torch.as_tensor([slot[c] for c in rep_cluster])
        centre = torch.zeros(len(clusters), rep_feats.shape[1]).index_add_(0, index, rep_feats)
        cluster_scores = less_scores(
            torch.nn.functional.normalize(centre, dim=-1), val, self.target.groups
        ).numpy()
        scores = cluster_scores[np.asarray([slot[int(c)] for c in cand_clusters])]
        pos = top_k(scores, num_samples, rng)
        self.last_scores = scores[pos]
        self.last_info = {"clusters": len(clusters), "representatives": len(reps)}
        return [int(i) for i in cands[pos]]

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "assignments": None if self.assignments is None else self.assignments.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = state["seed"]
        a = state.get("assignments")
        self.assignments = None if a is None else np.asarray(a, dtype=np.int64)
