"""`component=random`: random proportions, a new draw at every update, reproducible from (seed, step).

Unlike the spec's example (which reseeds the global RNG with the same seed at every call and therefore
returns the same vector every time), each update draws from its own `default_rng([seed, step])` stream:
different at every update, identical on every rank and after a resume, and no global RNG is touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dataflex.core.registry import register_mixer

from .base_mixer import Mixer, MixtureManager


@register_mixer("random")
class RandomMixer(Mixer):
    def __init__(self, mixture_manager: MixtureManager, seed: int = 42) -> None:
        super().__init__(mixture_manager)
        self.seed = int(seed)

    def mix(self, model, step_id: int, **kwargs: Any) -> np.ndarray:
        raw = np.random.default_rng([self.seed, int(step_id)]).random(len(self.mixture_manager.names))
        return raw / raw.sum()
