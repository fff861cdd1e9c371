"""`trainer=per_step`: online batch selection in every step (GREATS, RHO-LOSS, MaxLoss, GradNorm, uniform).

Each step draws `trainer.candidate_batch_size` = B candidate ids from the epoch-shuffled sampler (the static
trainer's), the per-step selector keeps b = the global batch size of them with the model as it is after the
previous update, and only those b go to the loop: collated, forwarded and back-propagated like any batch.
The choice is made in `next_indices(step, b)`, the loop's hook for "the ids of step t", so the ids trained
at step t are exactly those chosen at step t (nothing is prefetched past a choice: `plan_fixed_after` is
False) and the loop is unchanged.

A trainer of its own, not a mode of `dynamic_select`: that trainer's whole schedule (warmup_step,
update_step x update_times, a candidate pool, an index list the next update_step steps follow, one selection
file per update) is about re-selecting over a pool every few steps; the per-step family shares none of it
and its components answer another question (keep b of these B now, not pick n of the dataset). A flag
there would leave most of its keys meaningless in the mode.

A separable selector (a score per row: max_loss, rho_loss, grad_norm) scores B / ranks candidates on each
rank and the scores are all-gathered; greats (its Gram couples all candidates) and uniform run on every
rank over all B. Rank 0's choice is then broadcast, so ranks train disjoint shares of one decision even if
the replicas' arithmetic were to differ. The selector runs on the unwrapped model under a forked RNG
(training's random stream is the same as without selection) and leaves no gradient behind. State: the
sampler's position and the selector's state; the validation draws and `uniform` are seeded by (seed,
step), so a resumed run decides exactly as an uninterrupted one. An epoch counts candidates: with
`num_train_epochs`, a step consumes B ids.

grad_norm and greats already ran a forward + backward over the candidates; with
`trainer.reuse_candidate_pass` (default) the loop's `step_gradients` hook gets the kept rows' gradient
assembled from that pass (perstep/reuse.py) instead of forwarding and back-propagating them again, where
that is exact; where it is not (several processes, DeepSpeed, mixed precision, packing, dropout) the run
logs why once and trains the b rows as any batch.
"""

from __future__ import annotations

import json
import math
import time
from functools import partial
from typing import Any

import numpy as np
import torch

from dataflex.config.trainer import PerStepTrainerConfig
from dataflex.data.processor import collate
from dataflex.train.distributed import all_gather_cat, broadcast_object
from dataflex.train.perstep.reuse import assemble_update, blocker
from dataflex.train.perstep.rules import Choice, top_b
from dataflex.train.perstep.selectors import Candidates, PerStepSelector
from dataflex.train.signals.ghost import GhostGradients
from dataflex.train.signals.losses import SampleLosses
from dataflex.train.trainer.base import BaseTrainer
from dataflex.utils.logging import logger


class PerStepTrainer(BaseTrainer):
    arguments_class = PerStepTrainerConfig
    args: PerStepTrainerConfig
    component_kind = "per_step_selector"

    def __init__(self, *, selector: PerStepSelector | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.selector = selector
        """Built from the `component` config in `setup` unless given (tests, benchmarks)."""
        self.chosen: dict[int, np.ndarray] = {}
        """Step -> the ids kept at that step (the last few steps; what the loop must train)."""
        self._pending: dict[str, float] = {}
        self._recorded: tuple[int, GhostGradients, np.ndarray] | None = None
        """(step, the selector's candidate pass, kept positions) while that step's update can reuse it."""
        self._reuse_blocker: str | None = "not set up"
        self._setup_done = False
        self._resumed = False

    # ---- setup -------------------------------------------------------------------------------------------
    def setup(self, ctx: Any) -> None:
        """`ctx`: the loop (or the run context): accelerator, prepared model, optimizer, global batch size."""
        if getattr(self.train_data, "streaming", False):
            raise ValueError(
                "trainer=per_step reads candidates by id and needs an index over the training data; "
                "drop data.streaming (the token store serves any size)."
            )
        sharded = int(getattr(ctx, "zero_stage", 0)) == 3 or ctx.accelerator.distributed_type.name == "FSDP"
        if sharded:
            raise NotImplementedError(
                "trainer=per_step scores candidates on the unwrapped model, whose weights are shards "
                "under DeepSpeed ZeRO-3 / FSDP; use dist=ddp or dist=deepspeed_zero2."
            )
        super().setup(ctx)
        self.accelerator, self.optimizer = ctx.accelerator, ctx.optimizer
        self.global_batch = int(ctx.global_batch_size)
        self.candidates_per_step = self.args.candidate_batch_size or 2 * self.global_batch
        if self.candidates_per_step < self.global_batch:
            raise ValueError(
                f"trainer.candidate_batch_size={self.candidates_per_step} is smaller than the global batch "
                f"({self.global_batch} = per_device_train_batch_size x gradient_accumulation_steps x ranks): "
                "the selector keeps b of B candidates, so B >= b."
            )
        self.scoring_model = self.accelerator.unwrap_model(ctx.model)
        self.collate = partial(collate, pad_token_id=self.tokenizer.pad_token_id)
        self.is_main = bool(self.accelerator.is_main_process)
        self.rank, self.world_size = int(ctx.accelerator.process_index), int(ctx.accelerator.num_processes)
        if self.selector is None:
            self.selector = self._build_selector(ctx)
        self._reuse_blocker = (
            "trainer.reuse_candidate_pass=false"
            if not self.args.reuse_candidate_pass
            else blocker(self.scoring_model, self.accelerator, pack_capacity=self.pack_capacity)
        )
        if self.args.reuse_candidate_pass and self._reuse_blocker:
            logger.info(
                f"per_step: the kept rows get their own forward + backward (the candidate pass is not "
                f"reused: {self._reuse_blocker})"
            )
        self._setup_done = True

    def _build_selector(self, ctx: Any) -> PerStepSelector:
        from dataflex.train.components import build_component

        selector = build_component("per_step_selector", self.component_config, ctx)
        if selector is None:
            raise ValueError(
                "trainer=per_step needs a per-step selector: "
                "component=<uniform|max_loss|rho_loss|grad_norm|greats>."
            )
        return selector

    # ---- schedule ----------------------------------------------------------------------------------------
    def total_steps(self, global_batch_size: int) -> int:
        if self.args.max_steps > 0:
            return self.args.max_steps
        per_step = self.args.candidate_batch_size or 2 * global_batch_size
        return max(1, math.ceil(self.args.num_train_epochs * len(self.train_data) / per_step))

    def plan_fixed_after(self, done: int) -> bool:
        return False  # step t+1's ids depend on the model after step t

    # ---- the choice --------------------------------------------------------------------------------------
    def next_indices(self, step: int, n: int) -> np.ndarray:
        assert self._setup_done and self.selector is not None
        if n != self.global_batch:
            raise ValueError(
                f"per_step: the loop asked for {n} ids, expected the global batch {self.global_batch}"
            )
        candidates = np.asarray(super().next_indices(step, self.candidates_per_step), dtype=np.int64)
        lr = float(self.optimizer.param_groups[0]["lr"])
        device = self.accelerator.device
        start = time.perf_counter()
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if self.selector.separable and self.world_size > 1:
                choice = top_b(self._sharded_scores(candidates, device), n)
            else:
                batch = (
                    self.collate([self.train_data[int(i)] for i in candidates])
                    if self.selector.reads_rows
                    else {"sample_ids": torch.as_tensor(candidates)}
                )
                choice = self.selector.choose(self.scoring_model, Candidates(batch, step, lr, device), n)
        choice = broadcast_object(choice, src=0)
        self._check(choice, n)
        self.optimizer.zero_grad(set_to_none=True)  # a selector's backward leaves nothing behind
        positions = np.asarray(choice.indices, dtype=np.int64)
        kept = candidates[positions]
        recorded, self.selector.recorded = self.selector.recorded, None
        self._recorded = None
        if recorded is not None and not self._reuse_blocker:
            self._recorded = (step, recorded, positions)
        self.chosen[step] = kept
        self.chosen.pop(step - 8, None)
        scores = np.asarray(choice.scores, dtype=np.float64)
        finite = scores[np.isfinite(scores)]
        self._pending = {
            "select/seconds": time.perf_counter() - start,
            "select/score_mean": float(finite.mean()) if len(finite) else float("nan"),
            "select/candidates": float(len(candidates)),
            "select/reused_pass": float(self._recorded is not None),
        }
        if self.args.log_selection and self.is_main:
            self._log(step, candidates, kept, choice, truncate=self._resumed)
        self._resumed = False
        return kept

    def step_gradients(
        self, micro_batches: list[dict[str, torch.Tensor]], ctx: Any
    ) -> list[SampleLosses] | None:
        """The kept rows' update from the candidate pass (perstep/reuse.py), when this step recorded one."""
        recorded, self._recorded = self._recorded, None
        if recorded is None or recorded[0] != ctx.step:
            return None
        _, ghost, positions = recorded
        trained = torch.cat([mb["sample_ids"] for mb in micro_batches]).tolist()
        if trained != self.chosen[ctx.step].tolist():  # one process: the loop trains the kept ids in order
            raise RuntimeError(f"per_step: step {ctx.step} trains {trained}, chose {self.chosen[ctx.step]}")
        return assemble_update(
            ghost,
            positions,
            micro_batches,
            token_reduction=self.args.loss_reduction == "token",
            global_tokens=ctx.global_tokens,
            global_samples=ctx.global_samples,
        )

    def _sharded_scores(self, candidates: np.ndarray, device: torch.device) -> torch.Tensor:
        """(B,) row scores of a separable selector: this rank scores its contiguous share of the candidates,
        the shares are all-gathered in rank order (every rank then holds the same B numbers)."""
        assert self.selector is not None
        share = np.array_split(np.arange(len(candidates)), self.world_size)[self.rank]
        if len(share):
            batch = self.collate([self.train_data[int(candidates[k])] for k in share])
            mine = self.selector.row_scores(self.scoring_model, batch, device).double()
        else:
            mine = torch.zeros(0, dtype=torch.float64)
        return all_gather_cat(mine.to(device)).cpu()

    def _check(self, choice: Choice, n: int) -> None:
        idx = choice.indices
        if len(idx) != n or len(set(idx)) != n or min(idx) < 0 or max(idx) >= self.candidates_per_step:
            raise ValueError(
                f"the per-step selector must return {n} distinct positions in "
                f"[0, {self.candidates_per_step}), got {idx}"
            )

    def _log(
        self, step: int, candidates: np.ndarray, kept: np.ndarray, choice: Choice, *, truncate: bool
    ) -> None:
        path = self.run_dir / "selection" / "per_step.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        if truncate and path.is_file():  # a resumed run: its steps replace those the interrupted run logged
            lines = [x for x in path.read_text().splitlines() if x and json.loads(x)["step"] < step]
            path.write_text("".join(x + "\n" for x in lines))
        row = {
            "step": step,
            "candidates": candidates.tolist(),
            "kept": kept.tolist(),
            "scores": [float(s) for s in choice.scores],
        }
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def on_step_end(self, done: int, ctx: Any) -> dict[str, Any]:
        metrics, self._pending = self._pending, {}
        return metrics

    # ---- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["selector"] = self.selector.state_dict() if self.selector is not None else {}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._resumed = True
        if self.selector is not None:
            self.selector.load_state_dict(state.get("selector", {}))
