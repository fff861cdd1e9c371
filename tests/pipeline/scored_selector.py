"""A selector with hand-known scores for the pipeline's tests: score(i) = (37 i) mod 160 (distinct for the 160
items of small_data); it returns the `num_samples` best candidates and their scores (`last_scores`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dataflex.train.selector.base_selector import Selector


def score(ids: Any) -> np.ndarray:
    return (37 * np.asarray(ids, dtype=np.int64) % 160).astype(np.float64)


class ScoredSelector(Selector):
    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        cands = self.candidate_ids(kwargs)
        best = cands[np.argsort(-score(cands), kind="stable")[:num_samples]]
        self.last_scores = score(best)
        return [int(i) for i in best]


class UnscoredSelector(ScoredSelector):
    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        out = super().select(model, step_id, num_samples, **kwargs)
        self.last_scores = None
        return out
