"""`trainer=pipeline`: a data program of stages made of the existing components (the peer's dynamic_lego).

    dataflex-run trainer=pipeline pipeline=hierarchical  # loss filter 0.5 > ODM > dynamic saw > loss weights

Design (one more strategy over the one loop; nothing of the loop is copied):

- Stages (`pipeline.stages`, validated by `dataflex.config.pipeline.parse_stages` before anything loads) are
  built with the component contract (`build_component` + the `RunContext`): selectors, mixers and weighters
  exactly as dynamic_select / dynamic_mix / dynamic_weight build them, reorder patterns from
  `dataflex.train.reorder`.
- Index stages plan WINDOWS: after 0, U, 2U, ... steps (U = `trainer.update_step`) the next window of U
  global batches is planned, when its first step is drawn (`next_indices`; never prefetched across a
  boundary): the pool (all training ids) goes through the filter stages (select, mode filter; each keeps
  `keep_ratio` of what it receives, re-decided at its due boundaries: `warmup_step` + k x `every`); the one
  budget-taker draws U x B ids from the pool (select mode draw, a mixer by domain proportions, or a reorder
  pattern consume-once over the pool; none: a uniform epoch draw); a reorder stage that is not the taker
  permutes the window. Before a stage's warmup it passes the pool on (filter) or leaves the draw to the
  uniform draw (draw, reorder); a mixer draws by its initial proportions from the start, as dynamic_mix.
- Weight stages act on every step past their warmup (`every` steps apart): the loop forwards all
  micro-batches (`defer_backward`), each active weighter turns the global batch's per-sample losses into
  weights (dL/dx, as dynamic_weight), and the weights multiply: w = prod_k (N w_k) normalised to sum 1. A
  mixer that reweights the loss (DoReMi) joins the product with its domain weights alpha[d_i] (normalised
  to mean 1; `alpha_sample_weights`, reduction=sample) -- its per-sample form, not DoReMi's token-normalised
  objective: the product needs one factor per sample.
- A prune stage (InfoBatch, `PruneStage`) acts on the pool with the filters and gives each kept
  below-mean-loss id a loss factor 1 / (1 - prune_ratio): it multiplies the normalised weights (or, with no
  weight stage active, the plain loss: mean(factor x loss), trainer=infobatch's form), so the rescale is not
  normalised away. Its scores are the per-sample training losses gathered after every step.
- Signals: selectors and reorder stages read per-sample losses, embeddings and gradient features through one
  `SignalCache` (per-sample staleness `trainer.score_max_age`), so a signal several stages need is computed
  once per boundary, sharded over the ranks and gathered as today's scoring.
- The plan (`Plan`: ids, provenance, optional weights) is broadcast from rank 0, written to
  `<run dir>/pipeline/plan_<boundary>.json`, and its provenance chain goes to the ledger's `stage` column.
- Everything that decides the data (pool, plan, stage and component states, the cache) is checkpointed, so
  a resumed run makes the same plans and ends at the same weights.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from dataflex.config.infobatch import InfoBatchPruning
from dataflex.config.pipeline import STAGE_SOURCE, PipelineTrainerConfig, StageSpec, parse_stages
from dataflex.data.processor import collate
from dataflex.data.scores import check_precomputed, precomputed_scores
from dataflex.train.components import RunContext, build_component
from dataflex.train.context import StepContext
from dataflex.train.distributed import broadcast_object
from dataflex.train.mixer.base_mixer import DomainStats, MixtureManager
from dataflex.train.mixer.doremi import alpha_sample_weights
from dataflex.train.pipeline.plan import Plan
from dataflex.train.pipeline.signals import SignalCache
from dataflex.train.pipeline.stages import (
    DrawStage,
    FilterStage,
    MixStage,
    PruneStage,
    ReorderStage,
    StageScores,
    UniformDraw,
)
from dataflex.train.reorder.patterns import ReorderSpec
from dataflex.train.selector.base_selector import SelectionContext
from dataflex.train.selector.scoring import candidate_losses
from dataflex.train.signals.losses import SampleLosses, rescaled_mean_loss
from dataflex.train.trainer.base import BaseTrainer
from dataflex.train.weighter.base_weighter import WeightContext
from dataflex.utils.logging import logger


class PipelineTrainer(BaseTrainer):
    arguments_class = PipelineTrainerConfig
    args: PipelineTrainerConfig

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        component = cfg.get("component")
        if component is not None and component.get("_target_"):
            raise ValueError(
                "trainer=pipeline takes its components from pipeline.stages (each stage's use: / "
                "component:); drop component=... (rule: components live in stages)."
            )
        OmegaConf.to_object(cfg.trainer)  # the schema's __post_init__ runs parse_stages

    @classmethod
    def check_data(cls, cfg: Any, engine: Any) -> None:
        """Every stage's precomputed scores (reorder `score_field` / `score_path`, `use: precomputed`
        selectors and weighters), loaded and checked on the data engine before the model loads."""
        args = cfg.trainer
        for spec in parse_stages(args.stages, int(args.update_step)):
            prefix = f"pipeline.stages[{spec.index}].component"
            if spec.kind == "reorder":
                source = spec.component.get("score_source", "loss")
                if source in ("field", "file"):
                    field = spec.component.get("score_field") if source == "field" else None
                    path = spec.component.get("score_path") if source == "file" else None
                    precomputed_scores(engine, field=field, path=path, prefix=prefix)
            else:
                check_precomputed(spec.component, engine, prefix)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.specs: list[StageSpec] = parse_stages(self.args.stages, self.args.update_step)
        self.filters: list[FilterStage | PruneStage] = []
        """The stages that act on the pool before the budget-taker, in their order (filters, prune)."""
        self.prune: PruneStage | None = None
        self._factors: dict[int, np.ndarray] = {}
        """step -> the prune stage's per-id loss factors in force when the step's ids were planned."""
        self.taker: Any = None
        self.reorder: ReorderStage | None = None
        self.weights: list[tuple[StageSpec, Any]] = []
        self.mix: MixStage | None = None
        self.plan: Plan | None = None
        self.pool = np.arange(len(self.train_data), dtype=np.int64)
        self.pool_version = 0
        self.trained = 0
        self._step = 0
        self._provenance: dict[int, str] = {}
        self._last: dict[str, Any] | None = None
        self._mb_weights: dict[int, torch.Tensor] = {}

    # ---- setup ------------------------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx
        if getattr(self.train_data, "streaming", False):
            raise ValueError("trainer=pipeline plans ids of a fixed training set; streamed data has none.")
        args = self.args
        self.cache = SignalCache(len(self.train_data), args.score_max_age, enabled=args.share_signals)
        self._model = ctx.accelerator.unwrap_model(ctx.model)
        self.selection = SelectionContext(
            train_data=self.train_data,
            eval_data=self.eval_data,
            pad_token_id=ctx.pad_token_id,
            tokenizer=self.tokenizer,
            device=ctx.device,
            seed=args.seed,
            batch_size=args.per_device_train_batch_size,
            eval_batch_size=args.per_device_eval_batch_size,
            max_tokens=args.scoring_max_tokens,
            rank=ctx.rank,
            world_size=ctx.world_size,
            run_dir=self.run_dir,
            lockstep=ctx.zero_stage == 3,
            signals=self.cache,
        )
        self.uniform = UniformDraw(args.seed)
        for spec in self.specs:
            self._build(spec, ctx)
        if self.taker is None and self.reorder is not None:
            self.taker = self.reorder
        logger.info(
            "pipeline: "
            + " -> ".join(f"{s.name}{'' if s.enabled else ' (disabled)'}" for s in self.specs)
            + f"; budget: {getattr(getattr(self.taker, 'spec', None), 'name', 'uniform')}; window "
            f"{args.update_step} steps"
        )

    def _build(self, spec: StageSpec, ctx: RunContext) -> None:
        if spec.kind == "select":
            selector = build_component(
                "selector",
                spec.component,
                ctx,
                dataset=self.train_data,
                data_collator=partial(collate, pad_token_id=ctx.pad_token_id),
                cache_dir=str(self.run_dir / "pipeline" / f"stage{spec.index}"),
            )
            if hasattr(selector, "bind"):
                selector.bind(self.selection)
            if spec.mode == "filter":
                self.filters.append(FilterStage(spec, selector))
            elif spec.enabled:
                self.taker = DrawStage(spec, selector, self.args.seed)
        elif spec.kind == "prune":
            config = InfoBatchPruning(**spec.component)
            self.prune = PruneStage(spec, config, len(self.train_data), self.args.seed, self.args.max_steps)
            self.filters.append(self.prune)
        elif spec.kind == "mix":
            names = list(self.train_data.domain_names)
            sizes = [len(self.train_data.domain_rows(d)) for d in range(len(names))]
            manager = MixtureManager(names, sizes, np.full(len(names), 1.0 / len(names)))
            mixer = build_component("mixer", spec.component, ctx, mixture_manager=manager)
            self.mix = MixStage(spec, mixer, manager, self.train_data, self.args.seed)
            if spec.enabled:
                self.taker = self.mix
        elif spec.kind == "reorder":
            keys = dict(spec.component)
            source = keys.pop("score_source", "loss")
            field, path = keys.pop("score_field", None), keys.pop("score_path", None)
            score_stage = keys.pop("score_stage", None)
            keys.setdefault("seed", self.args.seed)
            static, by_stage = None, None
            if source == STAGE_SOURCE:  # validated: an earlier select stage, built by now
                by_stage = StageScores(str(score_stage), len(self.train_data))
                self._select_stage(str(score_stage)).scores = by_stage
            elif source != "loss":
                static = precomputed_scores(
                    self.train_data,
                    field=field if source == "field" else None,
                    path=path if source == "file" else None,
                    prefix=f"pipeline.stages[{spec.index}].component",
                )
            if spec.enabled:
                self.reorder = ReorderStage(spec, ReorderSpec(**keys), static, by_stage)
                if spec.budget:
                    self.taker = self.reorder
        else:
            weighter = build_component("weighter", spec.component, ctx)
            if getattr(weighter, "level", "sample") != "sample":
                raise ValueError(f"pipeline stage {spec.name}: a token-level weighter cannot be stacked.")
            weighter.attach(self._model)
            self.weights.append((spec, weighter))

    def _select_stage(self, name: str) -> FilterStage | DrawStage:
        stages: list[FilterStage | DrawStage] = [f for f in self.filters if isinstance(f, FilterStage)]
        if isinstance(self.taker, DrawStage):
            stages.append(self.taker)
        for stage in stages:
            if stage.spec.name == name:
                return stage
        raise ValueError(f"pipeline: no built select stage named {name!r} (score_stage)")

    # ---- the plan ---------------------------------------------------------------------------------------
    def total_steps(self, global_batch_size: int) -> int:
        return self.args.max_steps

    def _losses(self, ids: np.ndarray, max_age: int | None = None) -> np.ndarray:
        if max_age is None:
            return candidate_losses(self._model, ids, self.selection).numpy()
        return self.cache.get(
            "loss",
            ids,
            lambda rows: candidate_losses(
                self._model, rows, dataclasses.replace(self.selection, signals=None)
            ),
            max_age=max_age,
        ).numpy()

    def _make_plan(self, done: int, n: int) -> Plan:
        self.cache.done = done
        model = self._model
        kw = {"update_index": done // self.args.update_step + 1, "optimizer": self.ctx.optimizer}
        steps = min(self.args.update_step, self.args.max_steps - done)
        window = steps * n
        with torch.random.fork_rng(devices=[self.ctx.device] if self.ctx.device.type == "cuda" else []):
            pool = np.arange(len(self.train_data), dtype=np.int64)
            filtered = []
            for stage in self.filters:
                before = len(pool)
                pool = stage.apply(done, pool, model, kw)
                if stage.spec.active(done):
                    filtered.append(stage.spec.name)
                    logger.debug(f"pipeline {stage.spec.name}: {before} -> {len(pool)} ids")
            if not np.array_equal(pool, self.pool):
                self.pool, self.pool_version = pool, self.pool_version + 1
            taker = self.taker
            if isinstance(taker, DrawStage) and taker.spec.active(done):
                ids, chosen = taker.draw(done, pool, window, n, model, kw), taker.spec.name
            elif isinstance(taker, MixStage):
                ids = taker.draw(done, pool, self.pool_version, window, model, self.eval_data)
                chosen = taker.spec.name
            elif isinstance(taker, ReorderStage) and taker.spec.active(done):
                ids, chosen = taker.take(done, pool, self.pool_version, window, self._losses), taker.spec.name
            else:
                ids, chosen = self.uniform.take(pool, self.pool_version, window), UniformDraw.name
            ordered = None
            if self.reorder is not None and self.reorder is not taker and self.reorder.spec.active(done):
                ids, ordered = self.reorder.order_window(done, ids, self._losses), self.reorder.spec.name
        self._model.train()
        self.ctx.optimizer.zero_grad(set_to_none=True)
        ids = np.asarray(broadcast_object([int(i) for i in ids]), dtype=np.int64)
        plan = Plan(ids=ids, chosen_by=chosen, filtered_by=filtered, ordered_by=ordered, boundary=done)
        if self.ctx.is_main:
            out = Path(self.run_dir) / "pipeline"
            out.mkdir(parents=True, exist_ok=True)
            (out / f"plan_{done:06d}.json").write_text(json.dumps({**plan.to_json(), "pool": len(pool)}))
        return plan

    def next_indices(self, step: int, n: int) -> np.ndarray:
        self._step = step
        if self.plan is None or self.plan.remaining == 0:
            self.plan = self._make_plan(step, n)
        ids = self.plan.next(n)
        self._provenance[step] = self.plan.provenance
        if self.prune is not None:
            self._factors[step] = self.prune.weights  # replaced, never mutated, by the next decision
        for spec, weighter in self.weights:
            weighter.begin_step(step, self._weighting(spec, step))
        self.trained += n
        return ids

    def plan_fixed_after(self, done: int) -> bool:
        return self.plan is not None and self.plan.remaining > 0

    # ---- weights ----------------------------------------------------------------------------------------
    def _weighting(self, spec: StageSpec, step: int) -> bool:
        return spec.active(step) and (step - spec.warmup_step) % spec.every == 0

    def _active_weights(self, step: int) -> list[tuple[StageSpec, Any]]:
        return [(s, w) for s, w in self.weights if self._weighting(s, step)]

    @property
    def _doremi(self) -> Any:
        mixer = None if self.mix is None else self.mix.mixer
        return mixer if getattr(mixer, "reweights_loss", False) else None

    @property
    def defer_backward(self) -> bool:  # type: ignore[override]
        return bool(self._active_weights(self._step)) or self._doremi is not None

    def before_backward(
        self, all_losses: list[SampleLosses], micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext
    ) -> None:
        gathered = ctx.gathered()
        values = gathered["sample_loss"].float()
        n = len(values)
        combined = torch.ones(n, dtype=torch.float64)
        names = []
        n_local = sum(len(mb["sample_ids"]) for mb in micro_batches)
        wctx = WeightContext(
            global_step=ctx.step,
            total_steps=self.args.max_steps,
            warmup_steps=0,
            sample_ids=gathered["sample_ids"],
            domain_ids=gathered["domain_ids"],
            token_count=gathered["token_count"],
            domain_names=list(self.train_data.domain_names),
            local_slice=slice(ctx.rank * n_local, (ctx.rank + 1) * n_local),
            rank=ctx.rank,
            world_size=ctx.world_size,
            device=self.ctx.device,
        )
        inputs = {"micro_batches": micro_batches, **{k: gathered[k] for k in ("sample_ids", "domain_ids")}}
        for spec, weighter in self._active_weights(ctx.step):
            leaf = values.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = weighter.get_weighted_loss(leaf, ctx=wctx, model=self._model, inputs=inputs)
            grad = torch.autograd.grad(loss, leaf)[0].detach().double()
            combined *= grad * n  # N x w_k: 1.0 is the plain mean's weight
            names.append(spec.name)
        doremi = self._doremi
        if doremi is not None:
            doremi.before_backward(all_losses, micro_batches, ctx, update=True)
            domains = gathered["domain_ids"].long().numpy()
            combined *= torch.from_numpy(alpha_sample_weights(doremi.alpha, domains, reduction="sample"))
            names.append(self.mix.spec.name)  # type: ignore[union-attr]
        weights = combined / combined.sum()
        factors = self._factors.get(ctx.step)
        if factors is not None:  # InfoBatch's rescale multiplies the normalised weights: its mean stays > 1
            weights = weights * torch.from_numpy(factors[gathered["sample_ids"].long().numpy()])
        if not bool(torch.isfinite(weights).all()):
            raise FloatingPointError(f"pipeline: non-finite weights at step {ctx.step} from {names}")
        weights = broadcast_object(weights)
        local = weights[ctx.rank * n_local : (ctx.rank + 1) * n_local]
        start = 0
        for losses in all_losses:
            k = len(losses.mean)
            self._mb_weights[id(losses)] = local[start : start + k].to(losses.mean.device, losses.mean.dtype)
            start += k
        self._last = {"step": ctx.step, "weights": weights, "stages": names}

    def compute_loss(
        self, losses: SampleLosses, batch: dict[str, torch.Tensor], ctx: StepContext
    ) -> torch.Tensor:
        w = self._mb_weights.pop(id(losses), None)
        factors = self._factors.get(ctx.step)
        if w is None and factors is not None:  # InfoBatch alone: mean(factor x loss), as trainer=infobatch
            rows = torch.from_numpy(factors[batch["sample_ids"].long().cpu().numpy()])
            return rescaled_mean_loss(losses, rows, self.args.loss_reduction, ctx)
        if w is None:
            return super().compute_loss(losses, batch, ctx)
        return (w * losses.mean).sum() * ctx.world_size

    # ---- after the step ---------------------------------------------------------------------------------
    def on_step_end(self, done: int, ctx: StepContext) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        g = ctx.gathered() if self.mix is not None or self.prune is not None else {}  # collective: all ranks
        if self.prune is not None:
            self.prune.observe(g["sample_ids"].numpy(), g["sample_loss"].double().numpy())
            factors = self._factors.get(ctx.step)
            metrics["pipeline/pruned"] = float(self.prune.pruned)
            if factors is not None:
                metrics["pipeline/upweighted"] = float((factors[g["sample_ids"].long().numpy()] > 1).mean())
            for old in [s for s in self._factors if s < ctx.step]:
                del self._factors[old]  # the current step's stay for the ledger
        if self.mix is not None:
            k = len(self.train_data.domain_names)
            domains = g["domain_ids"].long()
            stats = DomainStats(
                step=done,
                token_sum=torch.zeros(k, dtype=torch.float64)
                .index_add_(0, domains, g["token_sum"].double())
                .numpy(),
                token_count=torch.zeros(k, dtype=torch.float64)
                .index_add_(0, domains, g["token_count"].double())
                .numpy(),
                sample_count=np.bincount(domains.numpy(), minlength=k),
            )
            self.mix.observe(done, stats)
            metrics.update(
                {
                    f"mixture/{n}": float(p)
                    for n, p in zip(self.mix.manager.names, self.mix.manager.proportions)
                }
            )
        metrics.update(self.cache.metrics())
        metrics["pipeline/pool_size"] = float(len(self.pool))
        if self._last is not None and self._last["step"] == ctx.step:
            w = self._last["weights"]
            metrics["pipeline/weight_max"] = float(w.max() * len(w))
            metrics["pipeline/weight_min"] = float(w.min() * len(w))
        return metrics

    def ledger_stages(self, ctx: StepContext) -> str:
        chain = self._provenance.pop(ctx.step, "?")
        if self._last is not None and self._last["step"] == ctx.step:
            chain += "".join(f"+{n}" for n in self._last["stages"])
        return chain

    def ledger_weights(self, ctx: StepContext) -> Any:
        if self._last is None or self._last["step"] != ctx.step:
            factors = self._factors.get(ctx.step)
            return None if factors is None else factors[np.asarray(ctx.indices, dtype=np.int64)]
        w = self._last["weights"]
        return (w * len(w)).numpy()

    @property
    def epoch(self) -> float:
        return self.trained / max(len(self.train_data), 1)

    # ---- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool.copy(),
            "pool_version": self.pool_version,
            "trained": self.trained,
            "plan": None if self.plan is None else self.plan.state_dict(),
            "cache": self.cache.state_dict(),
            "filters": [f.state_dict() for f in self.filters],
            "taker": self._taker_state(),
            "reorder": None if self.reorder is None else self.reorder.state_dict(),
            "mix": None if self.mix is None else self.mix.state_dict(),
            "uniform": self.uniform.state_dict(),
            "weights": [w.state_dict() for _, w in self.weights],
        }

    def _taker_state(self) -> Any:
        return self.taker.state_dict() if isinstance(self.taker, DrawStage) else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool = np.asarray(state["pool"], dtype=np.int64)
        self.pool_version, self.trained = int(state["pool_version"]), int(state["trained"])
        self.plan = None if state["plan"] is None else Plan.from_state(state["plan"])
        self.cache.load_state_dict(state["cache"])
        for stage, s in zip(self.filters, state["filters"]):
            stage.load_state_dict(s)
        if isinstance(self.taker, DrawStage) and state["taker"] is not None:
            self.taker.load_state_dict(state["taker"])
        if self.reorder is not None and state["reorder"] is not None:
            self.reorder.load_state_dict(state["reorder"], self.pool)
        if self.mix is not None and state["mix"] is not None:
            self.mix.load_state_dict(state["mix"], self.pool)
        self.uniform.load_state_dict(state["uniform"], self.pool)
        for (_, weighter), s in zip(self.weights, state["weights"]):
            weighter.load_state_dict(s or {})
