"""`trainer=static`: plain training over shuffled epochs — the baseline; or, with `trainer.replay=<recipe>`,
exactly the ids (and ledger weights) a dynamic run trained, step by step (`dataflex.mixing.recipe`).

A replayed step's loss is the one the dynamic run back-propagated, so that the same model, optimizer and seed
reach bit-identical weights on CPU:
- a step whose ledger weights are all 1.0 (select, mix, reorder, a weight run's warmup): the plain loss;
- a weighted step from trainer=dynamic_weight: sum_i w_i l_i with w_i = (N w_i) / N from the ledger (the
  trainer's own form); from trainer=infobatch: its form, sum_i W_i l_i / N (token reduction: over tokens).
The ledger keeps N w_i in float32: the replayed w_i equal the run's exactly when N w_i is representable,
which holds for a power-of-two global batch (otherwise they may differ in the last bit). Runs whose loss is
not a per-sample weighting of the ledger's ids (a DoReMi-style mixer, a token-level weighter) are refused by
the recipe (`dataflex-export` marks them).
"""

from __future__ import annotations

from typing import Any

import torch

from dataflex.config.trainer import StaticTrainerConfig
from dataflex.mixing.recipe import ReplaySampler, TrainedIds, check_recipe_data, data_fingerprint, load_recipe
from dataflex.train.components import RunContext
from dataflex.train.context import StepContext
from dataflex.train.signals.losses import SampleLosses
from dataflex.train.trainer.base import BaseTrainer
from dataflex.utils.logging import logger


def _replay_path(cfg: Any) -> str | None:
    trainer = cfg.get("trainer") if hasattr(cfg, "get") else None
    return trainer.get("replay") if trainer is not None else None


class StaticTrainer(BaseTrainer):
    """Every hook is the base behaviour (epoch-shuffled batches, the plain mean loss) unless replaying."""

    arguments_class = StaticTrainerConfig
    args: StaticTrainerConfig

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        """The recipe file parses (before any data or model loads); streams have no ids to replay."""
        super().validate_config(cfg)
        path = _replay_path(cfg)
        if path:
            load_recipe(path)
            if cfg.data.get("streaming"):
                raise ValueError(
                    f"trainer.replay={path} trains sample ids, which streamed data (data.streaming=true) "
                    "does not have: drop data.streaming."
                )

    @classmethod
    def check_data(cls, cfg: Any, engine: Any) -> None:
        """The recipe's ids name this data's samples (fingerprint, id range): after the data engine is
        built, before the model loads."""
        super().check_data(cfg, engine)
        path = _replay_path(cfg)
        if path and not getattr(engine, "streaming", False):
            recipe = load_recipe(path)
            check_recipe_data(recipe, data_fingerprint(engine), len(engine))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recipe: TrainedIds | None = load_recipe(self.args.replay) if self.args.replay else None
        self._weighted_form = "relative" if self._from_infobatch() else "scaled"
        recorded = self.recipe.source.get("loss_reduction") if self.recipe is not None else None
        if self.recipe is not None and recorded and recorded != self.args.loss_reduction:
            logger.warning(
                f"trainer.replay={self.recipe.path}: the recorded run used trainer.loss_reduction="
                f"{recorded}, this run {self.args.loss_reduction}: the replay trains the same ids but not "
                f"the same updates; set trainer.loss_reduction={recorded} to reproduce the run."
            )
        self._cursor = (-1, 0)
        """(step, rows of its micro-batches seen on this rank): each micro-batch's slots."""

    def _from_infobatch(self) -> bool:
        return self.recipe is not None and str(self.recipe.source.get("trainer") or "").endswith(
            "InfoBatchTrainer"
        )

    def total_steps(self, global_batch_size: int) -> int:
        if self.recipe is None:
            return super().total_steps(global_batch_size)
        if global_batch_size != self.recipe.batch_size:
            raise ValueError(
                f"trainer.replay={self.recipe.path}: the recipe trains {self.recipe.batch_size} ids per step "
                f"but this run's global batch is {global_batch_size} (per_device_train_batch_size x "
                "gradient_accumulation_steps x processes): set it to the recorded run's."
            )
        return len(self.recipe.steps)

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        if self.recipe is None:
            return
        engine = getattr(self.train_data, "engine", None)
        identity = data_fingerprint(engine) if engine is not None else None
        check_recipe_data(self.recipe, identity, len(self.train_data))
        self.sampler = ReplaySampler(self.recipe)

    def plan_fixed_after(self, done: int) -> bool:
        return True  # the epoch order is fixed by the seed; a replay's by the recipe

    # ---- the replayed loss ---------------------------------------------------------------------------
    def _slot_weights(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> torch.Tensor | None:
        """This micro-batch's ledger weights (its slots of the global batch), None for a plain step."""
        assert self.recipe is not None
        weights = self.recipe.weights[ctx.step]
        rows = len(batch["sample_ids"])
        step, used = self._cursor
        used = used if step == ctx.step else 0  # micro-batches of this step already weighted on this rank
        self._cursor = (ctx.step, used + rows)
        start = ctx.rank * (len(ctx.indices) // ctx.world_size) + used
        return None if weights is None else torch.from_numpy(weights[start : start + rows])

    def compute_loss(
        self, losses: SampleLosses, batch: dict[str, torch.Tensor], ctx: StepContext
    ) -> torch.Tensor:
        if self.recipe is None:
            return super().compute_loss(losses, batch, ctx)
        big_w = self._slot_weights(batch, ctx)
        if big_w is None:
            return super().compute_loss(losses, batch, ctx)
        n = len(ctx.indices)
        if self._weighted_form == "relative":  # InfoBatch: sum_i W_i l_i / N
            w = big_w.to(device=losses.mean.device, dtype=losses.mean.dtype)
            if self.args.loss_reduction == "token":
                return (w * losses.token_sum).sum() * ctx.world_size / max(ctx.global_tokens, 1)
            return (w * losses.mean).sum() * ctx.world_size / ctx.global_samples
        # dynamic_weight: sum_i w_i l_i, w_i = (N w_i) / N, back in the weights' float32
        w = (big_w.double() / n).float().to(device=losses.mean.device, dtype=losses.mean.dtype)
        return (w * losses.mean).sum() * ctx.world_size

    def ledger_weights(self, ctx: StepContext) -> Any:
        """The recipe's weights, so the replay's ledger equals the recorded run's."""
        return None if self.recipe is None else self.recipe.weights[ctx.step]
