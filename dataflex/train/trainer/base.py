"""The trainer = the single loop + a strategy. Subclasses override only the hooks they need:

- `total_steps(global_batch_size)`: how many optimizer steps;
- `setup(ctx)`: build samplers/components from the run context (`RunContext`: prepared model, accelerator,
  optimizer, data, ranks, run dir, global batch size), which the loop builds once;
- `next_indices(step, n)`: the global batch of step `step` (item ids of the training data);
- `compute_loss(losses, batch, ctx)`: the scalar back-propagated for one micro-batch;
- `defer_backward` + `before_backward(all_losses, micro_batches, ctx)`: when the loss needs statistics of
  the whole global batch, the loop forwards every micro-batch first and shows all losses to the strategy;
- `step_gradients(micro_batches, ctx)`: a strategy that already ran a forward + backward over the step's
  rows (per-step selection's candidate pass) writes the gradients itself and returns the per-sample losses;
  the loop then runs no forward/backward for the step;
- `on_step_end(done, ctx)`: update the plan (selection, proportions) for the next step; returns metrics.
- `plan_fixed_after(done)`: True when `on_step_end(done)` cannot change the ids of the next step and
  `next_indices` has no other effect, so the loader may draw them before step `done` ends (prefetch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataflex.config.trainer import TrainingArguments
from dataflex.data.sampling import EpochSampler
from dataflex.models.bundle import ModelBundle
from dataflex.train.components import RunContext, check_component
from dataflex.train.context import StepContext
from dataflex.train.signals.losses import SampleLosses


class BaseTrainer:
    arguments_class: type[TrainingArguments] = TrainingArguments
    ctx: RunContext
    """The run context, set by `setup` (the loop builds it once)."""
    component_kind: str | None = None
    """What this trainer consults (`selector`, `mixer`, `weighter`; None: no component), built from the
    `component` config by `dataflex.train.components.build_component`."""

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        """Checks the composed run config before any data or model is loaded (`dataflex.run.validate`)."""
        if cls.component_kind is not None:
            check_component(cls.component_kind, cfg.get("component"))

    @classmethod
    def check_data(cls, cfg: Any, engine: Any) -> None:
        """Checks what the config asks of the training data, on its engine, before the model loads
        (`dataflex.run.run`): a component's precomputed scores (`component.score_field` / `score_path`)."""
        from dataflex.data.scores import check_precomputed

        if cls.component_kind is not None and not getattr(engine, "streaming", False):
            check_precomputed(cfg.get("component"), engine, "component")

    def __init__(
        self,
        *,
        bundle: ModelBundle,
        train_data,
        eval_data=None,
        component: Any = None,
        trackers=None,
        run_dir: str | Path,
        **args: Any,
    ) -> None:
        self.args = self.arguments_class(**args)
        self.bundle = bundle
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        self.train_data = train_data
        self.eval_data = eval_data
        self.component_config = component
        self.trackers = trackers
        self.run_dir = Path(self.args.output_dir or run_dir)
        self.sampler: Any = None
        """What draws the ids of every step (`EpochSampler` here; the strategies set their own)."""
        self._data_epoch = 0

    # ---- hooks -----------------------------------------------------------------------------------------
    def total_steps(self, global_batch_size: int) -> int:
        if self.args.max_steps > 0:
            return self.args.max_steps
        return max(1, math.ceil(self.args.num_train_epochs * len(self.train_data) / global_batch_size))

    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx
        if getattr(self.train_data, "streaming", False):  # domains mixed by their datasets' weights
            from dataflex.data.stream_training import StreamSampler

            self.train_data.open()
            self.sampler = StreamSampler(self.train_data, self.train_data.domain_weights())
            return
        self.sampler = EpochSampler(len(self.train_data), seed=self.args.seed)

    def next_indices(self, step: int, n: int) -> np.ndarray:
        indices = self.sampler.next(n)
        if (
            getattr(self.sampler, "epoch", 0) != self._data_epoch
        ):  # a new epoch: size/weight datasets move to their next window
            self._data_epoch = self.sampler.epoch
            self.train_data.set_epoch(self._data_epoch)
        return indices

    def plan_fixed_after(self, done: int) -> bool:
        """Conservative default for strategies that do not say: never drawn early."""
        return False

    @property
    def data_epoch(self) -> int:
        """The epoch of the `size`/`weight` row windows that the last drawn ids refer to."""
        return self._data_epoch

    pack_capacity: int | None = None
    """Tokens per packed row when `data.packing=true` (set from data.cutoff_len by run.py); None: padded."""

    defer_backward: bool = False
    """True: the loop forwards all micro-batches of a step, calls `before_backward`, then back-propagates."""

    def before_backward(
        self, all_losses: list[SampleLosses], micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext
    ) -> None:
        """Called with every micro-batch's losses (graphs alive) when `defer_backward` is True."""

    def step_gradients(
        self, micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext
    ) -> list[SampleLosses] | None:
        """None (the loop forwards and back-propagates), or: the step's parameter gradients are already in
        `.grad` (equal to what the loop's backward of `compute_loss` would leave) and these are the
        detached losses of each micro-batch's rows, in order."""
        return None

    def compute_loss(
        self, losses: SampleLosses, batch: dict[str, torch.Tensor], ctx: StepContext
    ) -> torch.Tensor:
        """Plain loss, normalised by the global batch so accumulation/ranks don't change the update (DDP
        averages gradients over ranks, hence the `world_size` factor)."""
        if self.args.loss_reduction == "token":
            return losses.token_sum.sum() * ctx.world_size / max(ctx.global_tokens, 1)
        return losses.mean.sum() * ctx.world_size / ctx.global_samples

    def reported_loss(self, ctx: StepContext) -> torch.Tensor:
        """This rank's share of the step's loss (the loop sums it over ranks)."""
        if self.args.loss_reduction == "token":
            return torch.cat(ctx.token_sum).sum() / max(ctx.global_tokens, 1)
        return torch.cat(ctx.sample_loss).sum() / ctx.global_samples

    def on_step_end(self, done: int, ctx: StepContext) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything that decides the data and the loss from here on (saved in checkpoints). Subclasses
        extend it with their component's state."""
        return {"sampler": self.sampler.state_dict() if self.sampler is not None else None}

    def rank_state_dict(self) -> dict[str, Any] | None:
        """This rank's own data position (stream readers; None when every rank's is in `state_dict`)."""
        get = getattr(self.train_data, "rank_state_dict", None)
        return get() if get is not None else None

    def load_rank_state_dict(self, state: dict[str, Any]) -> None:
        self.train_data.load_rank_state_dict(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
            self._data_epoch = getattr(self.sampler, "epoch", 0)
            self.train_data.set_epoch(self._data_epoch)

    @property
    def epoch(self) -> float:
        return float(getattr(self.sampler, "epoch", 0))

    # ---- entry point -----------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        from dataflex.train.loop import TrainingLoop

        return TrainingLoop(self).run()
