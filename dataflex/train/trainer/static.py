"""`trainer=static`: plain training over shuffled epochs — the baseline."""

from __future__ import annotations

from dataflex.train.trainer.base import BaseTrainer


class StaticTrainer(BaseTrainer):
    """Every hook is the base behaviour: epoch-shuffled batches and the plain mean loss."""

    def plan_fixed_after(self, done: int) -> bool:
        return True  # the epoch order is fixed by the seed
