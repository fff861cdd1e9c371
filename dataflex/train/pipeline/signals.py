"""The pipeline's signal cache: per-sample signals (token-mean losses, embeddings, gradient features) that
several stages ask for are computed once per boundary and shared.

Every value is keyed by (signal, sample id) and remembers the optimizer step (`done`) it was computed after.
A request for ids returns the cached rows whose age (`done` now minus `done` then) is at most `max_age`
(`trainer.score_max_age`; 0 = only what this very boundary computed) and computes the others in ONE pass
over the missing ids, which the caller shards over the ranks and gathers (the functions of
`dataflex/train/selector/scoring.py` do), so every rank holds the same rows and makes the same decisions.
The cache is part of the checkpoint: with `score_max_age > 0` a resumed run reuses the same stale values the
uninterrupted run reused.

Signal keys name everything the value depends on besides the weights (`loss`, `embedding`,
`grad:<projection spec>`); a key with other parameters is another signal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

NEVER = -1


class SignalCache:
    def __init__(self, num_items: int, max_age: int = 0, enabled: bool = True) -> None:
        self.num_items = int(num_items)
        self.max_age = int(max_age)
        self.enabled = enabled
        """False: every request computes (what running the stages separately costs)."""
        self.values: dict[str, np.ndarray] = {}
        """signal -> (num_items, width) float32 rows (width 1 for losses)."""
        self.computed_at: dict[str, np.ndarray] = {}
        """signal -> (num_items,) the `done` each row was computed after (NEVER: not yet)."""
        self.done = 0
        """The boundary the pipeline is at (set by the trainer before its stages run)."""
        self.passes = 0
        """Compute passes so far (logged as pipeline/signal_passes)."""
        self.computed = 0
        """Rows computed so far (logged as pipeline/signal_rows)."""
        self.served = 0
        """Rows served from the cache so far."""

    def fresh(self, signal: str, ids: np.ndarray, max_age: int | None = None) -> np.ndarray:
        """Which of `ids` have a cached row at most `max_age` (default: the cache's) steps old."""
        at = self.computed_at.get(signal)
        if at is None or not self.enabled:
            return np.zeros(len(ids), dtype=bool)
        age = self.max_age if max_age is None else max_age
        when = at[ids]
        return (when != NEVER) & (self.done - when <= age)

    def get(
        self,
        signal: str,
        ids: np.ndarray,
        compute: Callable[[np.ndarray], torch.Tensor],
        max_age: int | None = None,
    ) -> torch.Tensor:
        """Rows of `signal` for `ids` (in their order): cached where fresh, else `compute(missing ids)` once.
        `compute` must be collective (every rank calls it with the same ids: they are derived from the same
        cache state) and return the gathered rows."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not self.enabled:
            self.passes += 1
            self.computed += len(ids)
            return compute(ids)
        missing = np.unique(ids[~self.fresh(signal, ids, max_age)])
        if len(missing):
            rows = compute(missing).detach().cpu().float()
            rows2d = rows.reshape(len(missing), -1).numpy()
            if signal not in self.values or self.values[signal].shape[1] != rows2d.shape[1]:
                self.values[signal] = np.zeros((self.num_items, rows2d.shape[1]), dtype=np.float32)
                self.computed_at[signal] = np.full(self.num_items, NEVER, dtype=np.int64)
            self.values[signal][missing] = rows2d
            self.computed_at[signal][missing] = self.done
            self.passes += 1
            self.computed += len(missing)
        self.served += len(ids) - len(missing)
        out = torch.from_numpy(self.values[signal][ids].copy())
        return out[:, 0] if out.shape[1] == 1 and signal == "loss" else out

    def metrics(self) -> dict[str, float]:
        return {
            "pipeline/signal_passes": float(self.passes),
            "pipeline/signal_rows": float(self.computed),
            "pipeline/signal_rows_shared": float(self.served),
        }

    # ---- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "values": {k: v.copy() for k, v in self.values.items()},
            "computed_at": {k: v.copy() for k, v in self.computed_at.items()},
            "counts": [self.passes, self.computed, self.served],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = {k: np.asarray(v, dtype=np.float32) for k, v in state["values"].items()}
        self.computed_at = {k: np.asarray(v, dtype=np.int64) for k, v in state["computed_at"].items()}
        self.passes, self.computed, self.served = (int(x) for x in state["counts"])
