"""`component=delta_loss`: a sliding window over the ranking of loss drops since the first update
(the original DataFlex DeltaLossSelector, with its window bug fixed).

- First update: the candidates' losses are the baseline; the selection is a uniform draw (nothing has
  dropped yet). The baseline candidates are scored again at every later update (a loss drop needs a loss
  at the first update), so later `candidates` passed by the trainer are not used.
- Update u >= 2 of U: delta = baseline - current, ranked in descending order. The window of
  `window_size * n` positions starts at sigmoid(x, k) * (n - window_size * n) with x = (u-1)/(U-1) and
  sigmoid(x, k) = 1 / (1 + exp(-k (x - 0.5))), so it slides from the largest drops towards the smallest;
  its end is cut at the first negative drop. Candidates in the window weigh 1, the others
  `outside_weight`; `num_samples` are drawn with those weights.

Fixed vs the original: it put the high weight on positions [start, end) of the *unsorted* candidates
(not on the window of the ranking), and divided by zero with update_times=1. Too few candidates: with
`replacement=false` (default) a selection that needs more distinct samples than have a positive weight
(possible with outside_weight=0 and a narrow or cut window) is refused with the knobs to turn, instead of
silently falling back to drawing with replacement; `replacement=true` draws with replacement throughout.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dataflex.config.component.select import DeltaLossSelectorConfig
from dataflex.core.registry import register_selector
from dataflex.train.selector.base_selector import Selector, weighted_sample
from dataflex.train.selector.scoring import candidate_losses


def window_position(
    update: int, update_times: int, n: int, window_size: float, steepness: float
) -> tuple[int, int]:
    """[start, end) of the window in the descending delta-loss ranking for 1-based update `update` (>= 2)."""
    x = (update - 1) / (update_times - 1) if update_times > 1 else 1.0
    sig = 1.0 / (1.0 + math.exp(-steepness * (x - 0.5)))
    width = window_size * n
    start = sig * (n - width)
    return int(start), int(start + width)


def delta_loss_probs(
    delta: np.ndarray,
    update: int,
    update_times: int,
    *,
    window_size: float,
    steepness: float,
    outside_weight: float,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Sampling weights (normalised) of each candidate and the window actually used."""
    delta = np.nan_to_num(np.asarray(delta, dtype=np.float64), nan=-np.inf)
    order = np.argsort(-delta, kind="stable")
    start, end = window_position(update, update_times, len(delta), window_size, steepness)
    negative = np.flatnonzero(delta[order] < 0)
    if len(negative):
        end = min(end, int(negative[0]))
    weights = np.full(len(delta), float(outside_weight))
    if end > start:
        weights[order[start:end]] = 1.0
    if weights.sum() <= 0:
        weights[:] = 1.0
    return weights / weights.sum(), (start, end)


@register_selector("delta_loss")
class DeltaLossSelector(Selector):
    Config = DeltaLossSelectorConfig
    baseline_ids: np.ndarray | None = None
    baseline_losses: np.ndarray | None = None

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        rng = self.rng(step_id)
        if self.baseline_ids is None:
            cands = self.candidate_ids(kwargs)
            if not self.config.replacement and num_samples > len(cands):
                raise ValueError(
                    f"delta_loss: {num_samples} distinct samples requested from {len(cands)} candidates; "
                    "raise trainer.candidate_pool_size, lower trainer.update_step or set "
                    "component.replacement=true."
                )
            self.baseline_ids = cands.copy()
            self.baseline_losses = candidate_losses(model, cands, self.ctx).numpy().astype(np.float64)
            pos = rng.choice(len(cands), size=num_samples, replace=self.config.replacement)
            self.last_scores = np.zeros(num_samples)
            self.last_info = {"phase": "baseline"}
            return [int(i) for i in cands[pos]]
        cands = self.baseline_ids
        current = candidate_losses(model, cands, self.ctx).numpy().astype(np.float64)
        assert self.baseline_losses is not None  # (set together with baseline_ids)
        delta = self.baseline_losses - current
        update = int(kwargs.get("update_index", kwargs.get("current_update_times", 2)))
        update_times = int(kwargs.get("update_times", update))
        probs, window = delta_loss_probs(
            delta,
            update,
            update_times,
            window_size=self.config.window_size,
            steepness=self.config.steepness,
            outside_weight=self.config.outside_weight,
        )
        positive = int((probs > 0).sum())
        if not self.config.replacement and num_samples > positive:
            raise ValueError(
                f"delta_loss: update {update} needs {num_samples} distinct samples but only {positive} of "
                f"the {len(cands)} baseline candidates have a positive weight (component.outside_weight="
                f"{self.config.outside_weight} and a window of {window[1] - window[0]}); set "
                "component.replacement=true to draw with replacement, raise component.outside_weight or "
                "component.window_size, or lower trainer.update_step."
            )
        pos = weighted_sample(probs, num_samples, rng, self.config.replacement)
        self.last_scores = delta[pos]
        self.last_info = {"window_start": window[0], "window_end": window[1], "candidates": len(cands)}
        return [int(i) for i in cands[pos]]

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "baseline_ids": None if self.baseline_ids is None else self.baseline_ids.tolist(),
            "baseline_losses": None if self.baseline_losses is None else self.baseline_losses.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = state["seed"]
        ids, losses = state.get("baseline_ids"), state.get("baseline_losses")
        self.baseline_ids = None if ids is None else np.asarray(ids, dtype=np.int64)
        self.baseline_losses = None if losses is None else np.asarray(losses, dtype=np.float64)
