"""`component=loss`: sample candidates by their current loss bucket (as the original DataFlex LossSelector).

The candidates' token-mean losses are split at two quantiles into low / medium / high buckets; every
candidate weighs 1 and the `focus` bucket `focus_weight`; the sampling probability is
weight^(1/temperature), normalised. Small temperatures draw (almost) only from the focus bucket; large
ones approach uniform sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dataflex.config.component.select import LossSelectorConfig
from dataflex.core.registry import register_selector
from dataflex.train.selector.base_selector import Selector, weighted_sample
from dataflex.train.selector.scoring import candidate_losses


def loss_bucket_probs(
    losses: np.ndarray, *, focus: str, focus_weight: float, quantiles: Sequence[float], temperature: float
) -> np.ndarray:
    """Sampling probabilities of each candidate from its loss bucket (non-finite losses get 0)."""
    losses = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(losses)
    if not finite.any():
        raise ValueError("loss selector: no candidate has a finite loss")
    q1, q2 = np.quantile(losses[finite], list(quantiles))
    buckets = {"low": losses <= q1, "medium": (losses > q1) & (losses <= q2), "high": losses > q2}
    weights = np.ones_like(losses)
    weights[buckets[focus] & finite] *= focus_weight
    weights[~finite] = 0.0
    probs = weights ** (1.0 / temperature)
    return probs / probs.sum()


@register_selector("loss")
class LossSelector(Selector):
    Config = LossSelectorConfig

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        cands = self.candidate_ids(kwargs)
        losses = candidate_losses(model, cands, self.ctx).numpy()
        probs = loss_bucket_probs(
            losses,
            focus=self.config.focus,
            focus_weight=self.config.focus_weight,
            quantiles=self.config.quantiles,
            temperature=self.config.temperature,
        )
        pos = weighted_sample(probs, num_samples, self.rng(step_id), self.config.replacement)
        self.last_scores = losses[pos]
        self.last_info = {"loss_mean_candidates": float(np.nanmean(losses))}
        return [int(i) for i in cands[pos]]
