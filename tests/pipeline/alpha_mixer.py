"""A loss-reweighting mixer with fixed domain weights (DoReMi's interface) for the pipeline's tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from dataflex.train.mixer.base_mixer import Mixer


class AlphaMixer(Mixer):
    reweights_loss = True

    def __init__(self, mixture_manager: Any) -> None:
        super().__init__(mixture_manager)
        self.alpha = np.arange(1.0, len(mixture_manager.names) + 1)
        self.calls = 0

    def before_backward(self, all_losses, micro_batches, ctx, update: bool) -> None:
        self.calls += 1

    def mix(self, model, step_id: int, **kwargs: Any) -> np.ndarray:
        return self.mixture_manager.uniform()
