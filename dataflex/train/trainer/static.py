"""`trainer=static`: plain training over shuffled epochs — the baseline."""

from __future__ import annotations

from dataflex.train.trainer.base import BaseTrainer


class StaticTrainer(BaseTrainer):
    """Every hook is the base behaviour: epoch-shuffled batches and the plain mean loss."""
