"""`component=precomputed` under `trainer=dynamic_weight`: per-sample loss weights from scores computed before
training (a quality or domain classifier, an offline influence run), read once from a field of the rows
(`score_field`) or an aligned file (`score_path`) by the loader trainer=dynamic_reorder uses
(dataflex/data/scores.py), checked before the model loads.

The mapping, over the global batch of N samples with scores s_i (the weights w sum to 1, so uniform w = 1/N
is the plain mean loss; the ledger records N x w_i, whose batch mean is 1):
- `softmax` (default): z_i = (s_i - mu) / sigma with mu, sigma the mean and standard deviation of the scores
  of *all* training items (fixed, so a sample's z does not depend on its batch-mates; sigma = 0 gives z = 0),
  w = softmax(+-z / temperature) (+ when higher_is_better). temperature -> infinity: uniform; small: the
  batch's best samples take nearly all the weight. A sample one sigma above its batch-mates weighs
  e^(1/temperature) times as much.
- `proportional`: w_i = s_i / sum_j s_j over the batch (scores must be >= 0, checked with the data; a batch
  whose scores are all 0 is weighted uniformly). N x w_i = s_i / mean of the batch's scores.
The weights are stop-gradient (only sum_i w_i loss_i is differentiated), as every built-in weighter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dataflex.config.component.weight import PrecomputedWeighterConfig
from dataflex.core.registry import register_weighter
from dataflex.data.scores import precomputed_scores
from dataflex.train.weighter.base_weighter import Weighter


def standardized(scores: np.ndarray) -> np.ndarray:
    """(s - mean) / std over all items; all zeros when every item has the same score."""
    scores = np.asarray(scores, dtype=np.float64)
    std = float(scores.std())
    return np.zeros_like(scores) if std == 0 else (scores - scores.mean()) / std


def score_weights(
    batch_scores: torch.Tensor, mapping: str, temperature: float, higher_is_better: bool = True
) -> torch.Tensor:
    """Weights (sum 1) of one global batch from its samples' (standardised, for softmax) scores."""
    s = batch_scores.double()
    if mapping == "softmax":
        return torch.softmax((s if higher_is_better else -s) / temperature, dim=0)
    if mapping == "proportional":
        total = s.sum()
        return torch.full_like(s, 1.0 / len(s)) if total <= 0 else s / total
    raise ValueError(f"component.mapping must be softmax or proportional, got {mapping!r}.")


@register_weighter("precomputed")
class PrecomputedWeighter(Weighter):
    """Loss weights from precomputed per-item scores (see the module docstring)."""

    Config = PrecomputedWeighterConfig

    def __init__(self, config: PrecomputedWeighterConfig | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = c = config or PrecomputedWeighterConfig()
        if self.train_data is None:
            raise ValueError("component=precomputed needs the training data (the dynamic trainer passes it).")
        raw = precomputed_scores(
            self.train_data,
            field=c.score_field,
            path=c.score_path,
            prefix="component",
            nonnegative=c.mapping == "proportional",
        )
        self.item_scores = torch.as_tensor(standardized(raw) if c.mapping == "softmax" else raw)
        """Per training item: the standardised score (softmax) or the raw one (proportional)."""
        self._last: dict[str, float] = {}

    def get_weighted_loss(
        self, losses: torch.Tensor, *, ctx: Any = None, model=None, inputs=None
    ) -> torch.Tensor:
        ids = ctx.sample_ids.detach().cpu().long()
        weights = score_weights(
            self.item_scores[ids], self.config.mapping, self.config.temperature, self.config.higher_is_better
        )
        weights = weights.to(device=losses.device, dtype=losses.dtype)
        n = len(weights)
        self._last = {"max_nw": float(weights.max()) * n, "min_nw": float(weights.min()) * n}
        return (weights * losses).sum()

    def metrics(self) -> dict[str, float]:
        return dict(self._last)
