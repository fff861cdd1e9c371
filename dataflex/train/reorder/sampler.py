"""Epochs over the training items in a score-given order: every item exactly once per epoch (the order
changes, the count never does). The scores come from the trainer; this class only keeps the plan.

- Static: one score per item, given once (`static_scores`); every epoch is ordered from them (epoch e uses
  seed + e for the random parts, so epoch 0 is data-efficacy's order for `spec.seed`).
- Dynamic: the trainer gives each epoch's scores before the epoch starts (`set_epoch_scores`) and may
  re-order the items of the current epoch not trained yet (`reorder_rest`, consume-once): an item already
  trained this epoch is never drawn again in it, one not yet trained always is.
A batch may straddle two epochs (like `EpochSampler`). The state (epoch, position, the orders) is saved in
checkpoints: a dynamic order depends on the model's scores at the time, so it is stored, not recomputed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dataflex.train.reorder.patterns import ReorderSpec, reorder


def derived_seed(*parts: int) -> int:
    """A deterministic 32-bit seed from integers (same on every rank and every run)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class ReorderSampler:
    def __init__(self, num_items: int, spec: ReorderSpec, static_scores: np.ndarray | None = None) -> None:
        if num_items <= 0:
            raise ValueError(f"ReorderSampler needs num_items > 0, got {num_items}")
        if static_scores is not None and len(static_scores) != num_items:
            raise ValueError(f"{len(static_scores)} scores for {num_items} items")
        self.num_items, self.spec = int(num_items), spec
        self.static_scores = None if static_scores is None else np.asarray(static_scores, dtype=np.float64)
        self.epoch, self.pos = 0, 0
        self.order: np.ndarray | None = None
        """This epoch's order (None until its scores are known)."""
        self.next_order: np.ndarray | None = None
        """The next epoch's order when its scores came before the epoch started."""

    def _epoch_order(self, scores: np.ndarray, epoch: int) -> np.ndarray:
        if len(scores) != self.num_items:
            raise ValueError(f"{len(scores)} scores for {self.num_items} items")
        return reorder(scores, dataclasses.replace(self.spec, seed=self.spec.seed + epoch))

    # ---- what the trainer asks and tells -----------------------------------------------------------------
    def needs_epoch_scores(self, n: int) -> bool:
        """Whether drawing `n` more ids enters an epoch whose order is not known yet (dynamic scores)."""
        if self.static_scores is not None:
            return False
        if self.order is None:
            return True
        return self.pos + n > self.num_items and self.next_order is None

    def set_epoch_scores(self, scores: np.ndarray) -> None:
        """The scores of every item for the epoch that starts next (or the current one, if not started)."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.order is None:
            self.order = self._epoch_order(scores, self.epoch)
        else:
            self.next_order = self._epoch_order(scores, self.epoch + 1)

    def rest(self) -> np.ndarray:
        """The items of this epoch not drawn yet, in their planned order."""
        return np.empty(0, np.int64) if self.order is None else self.order[self.pos :].copy()

    def reorder_rest(self, scores: np.ndarray) -> None:
        """Re-orders the untrained rest of this epoch by new scores (one per `rest()` item, in that order)."""
        rest = self.rest()
        if len(scores) != len(rest):
            raise ValueError(f"{len(scores)} scores for the {len(rest)} items left in this epoch")
        if len(rest) == 0 or self.order is None:
            return
        spec = dataclasses.replace(self.spec, seed=derived_seed(self.spec.seed, self.epoch, self.pos))
        self.order[self.pos :] = rest[reorder(scores, spec)]

    def next(self, n: int) -> np.ndarray:
        out = np.empty(int(n), dtype=np.int64)
        filled = 0
        while filled < n:
            if self.order is None:
                if self.static_scores is not None:
                    self.order = self._epoch_order(self.static_scores, self.epoch)
                elif self.next_order is not None:
                    self.order, self.next_order = self.next_order, None
                else:
                    raise RuntimeError(
                        f"reorder: epoch {self.epoch} has no scores yet (set_epoch_scores before drawing)"
                    )
            take = min(self.num_items - self.pos, int(n) - filled)
            out[filled : filled + take] = self.order[self.pos : self.pos + take]
            filled += take
            self.pos += take
            if self.pos == self.num_items:
                self.epoch, self.pos, self.order = self.epoch + 1, 0, None
        return out

    # ---- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "reorder",
            "num_items": self.num_items,
            "epoch": self.epoch,
            "pos": self.pos,
            "order": None if self.order is None else self.order.copy(),
            "next_order": None if self.next_order is None else self.next_order.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "reorder":
            raise ValueError(f"the checkpoint's sampler is {state.get('kind')!r}, not a reorder sampler")
        if int(state["num_items"]) != self.num_items:
            raise ValueError(
                f"the checkpoint's reorder plan is for {state['num_items']} items, the data has "
                f"{self.num_items}: the dataset changed since the checkpoint"
            )
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self.order = None if state["order"] is None else np.asarray(state["order"], dtype=np.int64)
        self.next_order = None if state["next_order"] is None else np.asarray(state["next_order"], np.int64)
