"""`component=random`: a seeded uniform draw from the candidates (the baseline every selector must beat)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dataflex.config.component.select import RandomSelectorConfig
from dataflex.core.registry import register_selector
from dataflex.train.selector.base_selector import Selector


@register_selector("random")
class RandomSelector(Selector):
    """Draws `num_samples` candidates uniformly; the draw is keyed by (seed, step_id), so it is the same on
    every rank and after a resume."""

    Config = RandomSelectorConfig

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        cands = self.candidate_ids(kwargs)
        if not self.config.replacement and num_samples > len(cands):
            raise ValueError(
                f"random selector: {num_samples} samples requested from {len(cands)} candidates "
                "without replacement; set component.replacement=true or a larger candidate pool."
            )
        pos = self.rng(step_id).choice(len(cands), size=num_samples, replace=self.config.replacement)
        self.last_scores = None
        self.last_info = {}
        return [int(i) for i in np.asarray(cands)[pos]]

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "replacement": self.config.replacement}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.config.replacement = state["seed"], state["replacement"]
