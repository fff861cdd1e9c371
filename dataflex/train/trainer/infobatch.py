"""`trainer=infobatch`: InfoBatch's unbiased dynamic pruning (dataflex/train/selector/infobatch.py has the
epoch plan) on the one loop.

Every item keeps its latest training loss (gathered over ranks after each step, so every rank holds the same
scores). When an epoch starts, its ids are all items except a random share `prune_ratio` of those below the
mean score, shuffled; each kept below-mean item's loss is multiplied by 1 / (1 - prune_ratio), and the step's
loss is the mean of weight x loss over the global batch (InfoBatch's `values.mul_(weights).mean()`) with
`trainer.loss_reduction=sample`; with `token` (the default) each sample's token-loss sum is weighted and the
total divided by the global batch's supervised tokens.
Once `delta` x the run's steps are done, new epochs are complete with weight 1 (the annealing).

Deviations from the official code, both forced by a step-based loop: annealing is by the share of *steps*
done, not of epochs (the number of pruned epochs a step budget holds is not known in advance); and the step
budget is fixed (`max_steps`, or num_train_epochs x items / global batch), so pruning makes every epoch
shorter and the budget covers more passes, instead of shortening the run. The plan (scores, epoch, position,
the epoch's ids and weights) is checkpointed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dataflex.config.infobatch import InfoBatchConfig
from dataflex.train.components import RunContext
from dataflex.train.context import StepContext
from dataflex.train.selector.infobatch import (
    INITIAL_SCORE,
    InfoBatchSettings,
    annealing_by_steps,
    epoch_plan,
    record_losses,
)
from dataflex.train.signals.losses import SampleLosses, rescaled_mean_loss
from dataflex.train.trainer.base import BaseTrainer


class InfoBatchTrainer(BaseTrainer):
    arguments_class = InfoBatchConfig
    args: InfoBatchConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._total = 0
        self.scores = np.zeros(0)
        self.plan_epoch = -1
        self.plan_ids = np.zeros(0, dtype=np.int64)
        self.plan_weights = np.zeros(0)
        self.pos = 0
        self.pruned_total = 0
        """Samples skipped over all epochs so far (logged as infobatch/pruned_total)."""
        self._step_weights: dict[int, np.ndarray] = {}

    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx
        if getattr(self.train_data, "streaming", False):
            raise ValueError(
                "trainer=infobatch prunes epochs of a fixed training set; streamed data has none."
            )
        self.scores = np.full(len(self.train_data), INITIAL_SCORE, dtype=np.float64)
        self._global_batch = ctx.global_batch_size

    def total_steps(self, global_batch_size: int) -> int:
        self._total = super().total_steps(global_batch_size)
        return self._total

    def _new_epoch(self, step: int) -> None:
        self.plan_epoch += 1
        settings = InfoBatchSettings(prune_ratio=self.args.prune_ratio, seed=self.args.seed)
        anneal = annealing_by_steps(step, self._total, self.args.delta)
        ids, weights = epoch_plan(self.scores, self.plan_epoch, settings, anneal=anneal)
        self.plan_ids, self.plan_weights, self.pos = ids, weights, 0
        self.pruned_total += len(self.scores) - len(ids)
        if self.plan_epoch != self._data_epoch:
            self._data_epoch = self.plan_epoch
            self.train_data.set_epoch(self._data_epoch)

    def next_indices(self, step: int, n: int) -> np.ndarray:
        out = np.empty(int(n), dtype=np.int64)
        weights = np.empty(int(n), dtype=np.float64)
        filled = 0
        while filled < n:
            if self.pos >= len(self.plan_ids):
                self._new_epoch(step)
            take = min(len(self.plan_ids) - self.pos, int(n) - filled)
            chunk = self.plan_ids[self.pos : self.pos + take]
            out[filled : filled + take] = chunk
            weights[filled : filled + take] = self.plan_weights[chunk]
            filled += take
            self.pos += take
        self._step_weights[step] = weights
        return out

    def plan_fixed_after(self, done: int) -> bool:
        """Mid-epoch ids are fixed; an epoch's plan needs the scores of every step before it."""
        return self.pos + self._global_batch <= len(self.plan_ids)

    def _local_weights(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        """The weights of this micro-batch's rows: its slots in the global batch (this rank's share)."""
        weights = self._step_weights[ctx.step]
        share = len(ctx.indices) // ctx.world_size
        start = ctx.rank * share + sum(len(ids) for ids in ctx.sample_ids[:-1])
        rows = len(batch["sample_ids"])
        return torch.as_tensor(weights[start : start + rows])

    def compute_loss(
        self, losses: SampleLosses, batch: dict[str, torch.Tensor], ctx: StepContext
    ) -> torch.Tensor:
        return rescaled_mean_loss(losses, self._local_weights(batch, ctx), self.args.loss_reduction, ctx)

    def on_step_end(self, done: int, ctx: StepContext) -> dict[str, Any]:
        gathered = ctx.gathered()  # collective: every rank updates the same scores
        record_losses(self.scores, gathered["sample_ids"].numpy(), gathered["sample_loss"].double().numpy())
        for old in [s for s in self._step_weights if s < ctx.step]:
            del self._step_weights[old]  # the current step's stay for the ledger
        weights = self._step_weights.get(ctx.step)
        return {
            "infobatch/pruned_total": float(self.pruned_total),
            "infobatch/epoch_size": float(len(self.plan_ids)),
            "infobatch/upweighted": float((weights > 1).mean()) if weights is not None else 0.0,
        }

    def ledger_weights(self, ctx: StepContext) -> np.ndarray | None:
        """Each slot's loss weight relative to the plain mean (1, or 1 / keep ratio for kept low-loss
        items)."""
        return self._step_weights.get(ctx.step)

    def ledger_stages(self, ctx: StepContext) -> str:
        return "infobatch"

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": None,
            "scores": self.scores.copy(),
            "plan_epoch": self.plan_epoch,
            "plan_ids": self.plan_ids.copy(),
            "plan_weights": self.plan_weights.copy(),
            "pos": self.pos,
            "pruned_total": self.pruned_total,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["scores"]) != len(self.scores):
            raise ValueError("the checkpoint's InfoBatch scores are for a different training set")
        self.scores = np.asarray(state["scores"], dtype=np.float64)
        self.plan_epoch = int(state["plan_epoch"])
        self.plan_ids = np.asarray(state["plan_ids"], dtype=np.int64)
        self.plan_weights = np.asarray(state["plan_weights"], dtype=np.float64)
        self.pos, self.pruned_total = int(state["pos"]), int(state["pruned_total"])
        self._data_epoch = max(self.plan_epoch, 0)
        self.train_data.set_epoch(self._data_epoch)

    @property
    def epoch(self) -> float:
        return float(max(self.plan_epoch, 0))
