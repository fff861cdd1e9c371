"""`trainer=dynamic_reorder`: the order of the training data follows per-item scores
(microsoft/data-efficacy's orderings: sorting, folding, zigzag, segment, stair, saw, shuffle; a local shuffle
window; polarity). The order changes, the number of samples never does: every epoch trains every item exactly
once.

Scores: `score_source=field` reads a numeric column of the rows (`score_field`, precomputed), `file` an
aligned file of scores (`score_path`); `loss` is the
model's current token-mean loss of each item (forward only, sharded over the ranks and gathered, so every rank
plans the same order). `update_step=0` (static) scores once, before the first step; `update_step=k` (dynamic,
loss) re-scores the items not trained yet in this epoch every k steps and re-orders them (consume-once), and
scores all items afresh when an epoch starts. Scoring happens only where the loop is in step on every rank: in
`on_step_end` and in the draw of a step whose ids could not be prefetched (`plan_fixed_after` says so).
The plan (orders, position, static scores) is part of the checkpoint, so a resumed run trains the same ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dataflex.config.reorder import DynamicReorderConfig
from dataflex.data.scores import precomputed_scores, read_score_file
from dataflex.train.components import RunContext
from dataflex.train.context import StepContext
from dataflex.train.distributed import all_gather_cat
from dataflex.train.reorder.patterns import ReorderSpec
from dataflex.train.reorder.sampler import ReorderSampler
from dataflex.train.trainer.base import BaseTrainer


def read_scores(path: str | None, n: int) -> np.ndarray:
    """Scores aligned with the training items from `trainer.score_path` (kept for callers of the earlier
    name; the loader is dataflex.data.scores)."""
    return read_score_file(str(path), n, "trainer.score_path")


class DynamicReorderTrainer(BaseTrainer):
    arguments_class = DynamicReorderConfig
    args: DynamicReorderConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        args = self.args
        self.spec = ReorderSpec(
            pattern=args.pattern,
            ascending=args.ascending,
            layers=args.layers,
            sections=args.sections,
            folding_ratio=args.folding_ratio,
            x_pct=args.x_pct,
            y_pct=args.y_pct,
            front_is_high=args.front_is_high,
            back_is_high=args.back_is_high,
            window=args.window,
            seed=args.seed if args.reorder_seed is None else args.reorder_seed,
        )
        self.sampler: ReorderSampler | None = None
        self._scoring: dict[str, Any] = {}
        self._total = 0
        self.rescored = 0
        """Scoring passes so far (initial, epoch starts, updates); logged as reorder/scorings."""

    @classmethod
    def check_data(cls, cfg: Any, engine: Any) -> None:
        """The field or file scores, checked on the data engine before the model loads."""
        super().check_data(cfg, engine)
        source = cfg.trainer.get("score_source")
        if source in ("field", "file"):
            precomputed_scores(
                engine,
                field=cfg.trainer.score_field if source == "field" else None,
                path=cfg.trainer.score_path if source == "file" else None,
                prefix="trainer",
            )

    # ---- scores ---------------------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx
        if getattr(self.train_data, "streaming", False) or getattr(self.train_data, "mode", "sft") != "sft":
            raise ValueError(
                "trainer=dynamic_reorder orders the rows of an SFT training set; streamed data and packed "
                "pretraining blocks have no fixed rows to order."
            )
        self._scoring = {
            "model": ctx.model,
            "unwrap": ctx.accelerator.unwrap_model,
            "device": ctx.accelerator.device,
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "lockstep": ctx.zero_stage == 3,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        self._global_batch = ctx.global_batch_size
        static = None
        if self.args.score_source in ("field", "file"):
            static = precomputed_scores(
                self.train_data,
                field=self.args.score_field if self.args.score_source == "field" else None,
                path=self.args.score_path if self.args.score_source == "file" else None,
                prefix="trainer",
            )
        self.sampler = ReorderSampler(len(self.train_data), self.spec, static_scores=static)

    def total_steps(self, global_batch_size: int) -> int:
        self._total = super().total_steps(global_batch_size)
        return self._total

    def _loss_scores(self, ids: np.ndarray) -> np.ndarray:
        """Token-mean loss of each item under the current weights, in `ids` order, identical on every rank."""
        from dataflex.train.selector.scoring import sample_losses

        s = self._scoring
        ids = np.asarray(ids, dtype=np.int64)
        shards = np.array_split(ids, s["world_size"])
        shard = shards[s["rank"]]
        pad = s["lockstep"] and len(shard) < len(shards[0])  # ZeRO-3: as many forwards on every rank
        mine = np.concatenate([shard, ids[:1]]) if pad else shard
        model = s["unwrap"](s["model"])
        local = sample_losses(
            model,
            self.train_data,
            mine.tolist(),
            batch_size=self.args.per_device_eval_batch_size,
            pad_token_id=s["pad_token_id"],
            device=s["device"],
            max_tokens=self.args.scoring_max_tokens,
            lockstep=s["lockstep"],
        )[: len(shard)]
        self.rescored += 1
        return all_gather_cat(local.to(s["device"])).cpu().double().numpy()

    def _score_epoch(self) -> None:
        """Gives the sampler the scores of every item for the epoch it is about to enter."""
        assert self.sampler is not None
        scores = self._loss_scores(np.arange(self.sampler.num_items))
        if self.args.update_step == 0:
            self.sampler.static_scores = scores  # static: these scores order every epoch
        else:
            self.sampler.set_epoch_scores(scores)

    # ---- the plan -------------------------------------------------------------------------------------
    def next_indices(self, step: int, n: int) -> np.ndarray:
        assert self.sampler is not None
        if self.sampler.needs_epoch_scores(n):
            self._score_epoch()
        ids = self.sampler.next(n)
        if self.sampler.epoch != self._data_epoch:
            self._data_epoch = self.sampler.epoch
            self.train_data.set_epoch(self._data_epoch)
        return ids

    def _updates_at(self, done: int) -> bool:
        k = self.args.update_step
        return bool(k) and done % k == 0 and done < self._total

    def plan_fixed_after(self, done: int) -> bool:
        """The ids of step `done` may be drawn early unless on_step_end(done) re-orders or the draw scores."""
        assert self.sampler is not None
        return not (self._updates_at(done) or self.sampler.needs_epoch_scores(self._global_batch))

    def on_step_end(self, done: int, ctx: StepContext) -> dict[str, Any]:
        assert self.sampler is not None
        if self._updates_at(done):
            rest = self.sampler.rest()
            if len(rest):
                scores = self._loss_scores(rest)
                self.sampler.reorder_rest(scores)
                return {"reorder/rest_score_mean": float(scores.mean()), "reorder/scorings": self.rescored}
        return {}

    def ledger_stages(self, ctx: StepContext) -> str:
        mode = "static" if self.args.update_step == 0 else "dynamic"
        return f"reorder:{self.spec.pattern}:{mode}"

    # ---- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        assert self.sampler is not None
        state = super().state_dict()
        scores = self.sampler.static_scores
        state["static_scores"] = None if scores is None else scores.copy()
        state["rescored"] = self.rescored
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        assert self.sampler is not None
        if state.get("static_scores") is not None:
            self.sampler.static_scores = np.asarray(state["static_scores"], dtype=np.float64)
        self.rescored = int(state.get("rescored", 0))
