"""`component=static` (fixed proportions) and `component=none` (keep the proportions of the mixture rule)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dataflex.config.component.mix import StaticMixerConfig
from dataflex.core.registry import register_mixer

from .base_mixer import Mixer, MixtureManager


@register_mixer("static")
class StaticMixer(Mixer):
    """Returns the same proportions at every update: `proportions`, or uniform when None."""

    Config = StaticMixerConfig

    def __init__(self, mixture_manager: MixtureManager, config: StaticMixerConfig | None = None) -> None:
        super().__init__(mixture_manager)
        proportions = (config or StaticMixerConfig()).proportions
        names = mixture_manager.names
        if proportions is not None and len(proportions) != len(names):
            raise ValueError(
                f"component.proportions has {len(proportions)} values for {len(names)} domains "
                f"{names}; give one per domain in that order."
            )
        self.proportions = None if proportions is None else [float(p) for p in proportions]

    def mix(self, model, step_id: int, **kwargs: Any) -> np.ndarray:
        if self.proportions is None:
            return self.mixture_manager.uniform()
        return np.asarray(self.proportions, dtype=np.float64)


@register_mixer("none")
class KeepMixer(Mixer):
    """No mixing: every update keeps the proportions in force (those of `trainer.mixture_sample_rule`)."""

    def mix(self, model, step_id: int, **kwargs: Any) -> np.ndarray:
        return self.mixture_manager.proportions
