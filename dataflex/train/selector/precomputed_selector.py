"""`component=precomputed` under `trainer=dynamic_select`: selection by scores computed before training (a
quality classifier, a reward model, an offline influence run), read once from a field of the rows
(`score_field`) or an aligned file (`score_path`) by the loader trainer=dynamic_reorder uses
(dataflex/data/scores.py), checked before the model loads.

- `mode=top_k`: the `num_samples` best-scoring candidates of the update (ties in a seeded random order).
  With the whole training set as candidates every update picks the same ids (a static filter); a seeded
  `trainer.candidate_pool_size` makes each update the top of a fresh pool.
- `mode=threshold`: the candidates whose score passes `threshold` are eligible, and `num_samples` of them
  are drawn uniformly (seeded; without replacement unless `replacement=true`). Fewer eligible candidates
  than needed without replacement is refused, with the counts and the knobs.
`higher_is_better=false` turns both around (low scores are good, `threshold` is an upper bound).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dataflex.config.component.select import PrecomputedSelectorConfig
from dataflex.core.registry import register_selector
from dataflex.data.scores import precomputed_scores
from dataflex.train.selector.base_selector import Selector, top_k


def threshold_eligible(scores: np.ndarray, threshold: float, higher_is_better: bool) -> np.ndarray:
    """Positions whose score passes the threshold (>= it, or <= it when low scores are good)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.flatnonzero(scores >= threshold if higher_is_better else scores <= threshold)


@register_selector("precomputed")
class PrecomputedSelector(Selector):
    """Top-k or thresholded uniform draw by precomputed per-item scores (see the module docstring)."""

    Config = PrecomputedSelectorConfig
    _scores: np.ndarray | None = None

    @property
    def scores(self) -> np.ndarray:
        """Every training item's score (loaded once)."""
        if self._scores is None:
            self._scores = precomputed_scores(
                self.dataset, field=self.config.score_field, path=self.config.score_path, prefix="component"
            )
        return self._scores

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        cands = self.candidate_ids(kwargs)
        scores = self.scores[cands]
        rng = self.rng(step_id)
        if self.config.mode == "top_k":
            if num_samples > len(cands):
                raise ValueError(
                    f"precomputed: top {num_samples} of {len(cands)} candidates requested; enlarge "
                    "trainer.candidate_pool_size or lower trainer.update_step."
                )
            pos = top_k(scores if self.config.higher_is_better else -scores, num_samples, rng)
            eligible = len(cands)
        else:
            assert self.config.threshold is not None  # (the schema requires it for mode=threshold)
            ok = threshold_eligible(scores, self.config.threshold, self.config.higher_is_better)
            eligible = len(ok)
            if eligible == 0 or (not self.config.replacement and eligible < num_samples):
                side = ">=" if self.config.higher_is_better else "<="
                raise ValueError(
                    f"precomputed: {eligible} of {len(cands)} candidates have a score {side} "
                    f"component.threshold={self.config.threshold} but the update needs {num_samples}; "
                    "loosen the threshold, enlarge trainer.candidate_pool_size, or set "
                    "component.replacement=true."
                )
            pos = ok[rng.choice(eligible, size=num_samples, replace=self.config.replacement)]
        self.last_scores = scores[pos]
        self.last_info = {"eligible": int(eligible), "candidate_score_mean": float(scores.mean())}
        return [int(i) for i in cands[pos]]
