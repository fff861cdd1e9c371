"""The mixer API (public, from the spec): `Mixer(mixture_manager)` with `mix(model, step_id, **kwargs)`
returning normalised domain proportions, and `self.mixture_manager.names`.

A mixer decides, it does not drive: the Mix trainer calls `observe(stats)` after every step with that
step's per-domain signals of the *global* batch, `mix(...)` at the scheduled updates, and applies the
returned proportions to the very next batch. Mixers that reweight the loss instead of (or besides)
resampling (DoReMi) set `reweights_loss` and implement `before_backward` / `weighted_loss`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_STATE_TYPES = (bool, int, float, str, type(None), list, tuple, dict, np.ndarray, np.generic)


class MixtureManager:
    """The domains of the training data and a read-only view of the proportions in force, which the trainer's
    sampler alone owns (`attach`); before the sampler exists, the initial proportions it will start from."""

    def __init__(
        self, names: Sequence[str], sizes: Sequence[int], proportions: Sequence[float] | np.ndarray
    ) -> None:
        self.names: list[str] = list(names)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self._initial = np.asarray(proportions, dtype=np.float64).copy()
        self._sampler: Any = None

    def attach(self, sampler: Any) -> None:
        """From now on the proportions are the sampler's (anything with a `proportions` vector)."""
        self._sampler = sampler

    @property
    def proportions(self) -> np.ndarray:
        """The proportions that produced the current batches (a copy)."""
        source = self._initial if self._sampler is None else self._sampler.proportions
        return np.array(source, dtype=np.float64)

    def uniform(self) -> np.ndarray:
        return np.full(len(self.names), 1.0 / len(self.names))


@dataclass
class DomainStats:
    """One step's per-domain signals over the global batch (every micro-batch of every rank)."""

    step: int
    """Steps done when observed (1-based: the stats of step `step`'s batch)."""
    token_sum: np.ndarray
    """(K,) summed token loss per domain."""
    token_count: np.ndarray
    """(K,) supervised tokens per domain."""
    sample_count: np.ndarray
    """(K,) samples per domain (what was actually trained)."""

    @property
    def present(self) -> np.ndarray:
        return (self.sample_count > 0) & (self.token_count > 0)

    @property
    def loss(self) -> np.ndarray:
        """(K,) token-mean loss per domain; NaN where the domain had no supervised token this step."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.present, self.token_sum / np.maximum(self.token_count, 1), np.nan)


class Mixer:
    """Base class of every mixer. Subclasses implement `mix`; `observe` is optional."""

    reweights_loss: bool = False
    """True: the trainer defers backward and uses `before_backward` + `weighted_loss` (DoReMi)."""
    updates_every_step: bool = False
    """With `reweights_loss`: True makes `before_backward(..., update=True)` run at every step, whatever the
    trainer's warmup_step/update_step (which then only schedule `mix`); False: only at the scheduled
    updates."""

    def __init__(self, mixture_manager: MixtureManager) -> None:
        self.mixture_manager = mixture_manager

    def mix(self, model, step_id: int, **kwargs: Any) -> np.ndarray:
        """Proportions (one per `self.mixture_manager.names`, summing to 1) for the steps after `step_id`."""
        raise NotImplementedError(f"{type(self).__name__} must implement mix(model, step_id, **kwargs)")

    observe_warmup: bool = True
    """False: the trainer does not call `observe` during its warmup steps (ODM's released code)."""

    def observe(self, stats: DomainStats) -> None:
        """Sees every step's per-domain signals (after the step), including warmup steps unless
        `observe_warmup` is False."""

    def metrics(self) -> dict[str, float]:
        """Extra metrics to log at each update (e.g. DoReMi's alpha)."""
        return {}

    # ---- loss reweighting (only when `reweights_loss`) --------------------------------------------------
    def before_backward(self, all_losses, micro_batches, ctx, update: bool) -> None:
        raise NotImplementedError

    def weighted_loss(self, losses, batch, ctx):
        raise NotImplementedError

    # ---- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain attributes (numbers, strings, lists, arrays, dicts); enough for most mixers, including the
        spec's example. Mixers with other state override this pair."""
        return {
            k: copy.deepcopy(v)
            for k, v in vars(self).items()
            if k != "mixture_manager" and not k.startswith("_") and isinstance(v, _STATE_TYPES)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, copy.deepcopy(value))


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()
