"""`trainer=dynamic_select`: the Select trainer of the spec, as a strategy over the one training loop.

Schedule (spec): `warmup_step` steps on the selector's `warmup()` samples (random by default); then, at
the end of steps warmup_step + k * update_step (k = 0 .. update_times-1), the selector picks
`update_step x global_batch_size` samples and those, in a random order seeded by (trainer.seed, update
number), are exactly the global batches of the next `update_step` steps (an `IndexListSampler`, which
refuses to recycle). The shuffle matters: top-k selectors (less, cluster_less, near, nice) return their
picks sorted by score, and training them in that order is a score-sorted curriculum (whole domains or
clusters per batch) that neither LESS (a shuffling sampler over the subset) nor the original DataFlex (a
`RandomSampler` over the selected ids) trains; `trainer.selection_order=selector` keeps the returned order
for whoever wants that curriculum. With warmup_step=0
the first selection happens before step 0 (on the initial model). `state_dict()` holds the update
count, the current plan's position and the selector's state, so a resumed run continues exactly.

Per update: an optional seeded candidate pool (`candidate_pool_size`) bounds what is scored; the
selector runs on every rank (built-in selectors share the scoring work and gather the results), then
rank 0's selection is broadcast so every rank trains on the same ids whatever the selector does; the
selected ids (in training order), their scores and per-domain counts are written to `<run dir>/selection/`
(main process) and returned as metrics (`select/domain_fraction/<domain>`, `select/score_mean`, ...). Global
RNG state is forked around the selector, so selection does not change the training's random stream, and any
gradient a selector leaves behind is cleared.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dataflex.config.component.select import SCHEMAS, TargetSelectorConfig
from dataflex.config.trainer import DynamicSelectTrainerConfig
from dataflex.data.processor import collate
from dataflex.data.sampling import IndexListSampler
from dataflex.train.components import RunContext, build_component, check_component
from dataflex.train.distributed import broadcast_object, unwrap_parallel
from dataflex.train.selector.base_selector import SelectionContext, Selector
from dataflex.train.selector.scoring import missing_target_message
from dataflex.train.signals.memory import check_gradient_feature_memory
from dataflex.train.trainer.base import BaseTrainer
from dataflex.utils.logging import logger


def validate_component(component: Any, args: DynamicSelectTrainerConfig) -> None:
    """The component contract's checks, then what a selector needs from the trainer's config: Adam
    moments for Adam gradient features, and a target set (its own or the trainer's default)."""
    check_component("selector", component)
    schema = OmegaConf.get_type(component) if isinstance(component, DictConfig) else None
    if schema is None or component._target_ != getattr(schema, "_target_", None):
        return  # a user's class: its signature judged its keys
    try:
        obj = OmegaConf.to_object(component)
    except TypeError:  # extra keys added with +component.x: the class itself will judge them
        return
    if getattr(obj, "gradient_type", None) == "adam" and args.optim in ("sgd", "adafactor"):
        raise ValueError(
            f"component.gradient_type=adam preconditions the gradient features with the AdamW moments, "
            f"and trainer.optim={args.optim} keeps none: set component.gradient_type=sgd or "
            "trainer.optim=adamw_torch."
        )
    if isinstance(obj, TargetSelectorConfig) and obj.needs_target():
        if not (obj.target_domain or obj.target_dataset or args.target_domain or args.target_dataset):
            names = {node: name for name, node in SCHEMAS.items()}
            raise ValueError(missing_target_message(names.get(type(obj), type(obj).__name__)))


class DynamicSelectTrainer(BaseTrainer):
    arguments_class = DynamicSelectTrainerConfig
    args: DynamicSelectTrainerConfig
    component_kind = "selector"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        validate_component(self.component_config, self.args)
        self.selector: Any = None
        self.update = 0
        self.trained_samples = 0
        self._pending: dict[str, float] = {}

    @classmethod
    def validate_config(cls, cfg: DictConfig) -> None:
        """Checks the composed run config (trainer + component) without loading data or models; meant for
        `dataflex.run.validate` (the trainer also runs the component checks itself when it is built)."""
        args = cast(DynamicSelectTrainerConfig, OmegaConf.to_object(cfg.trainer))
        validate_component(cfg.get("component"), args)

    # ---- schedule --------------------------------------------------------------------------------------
    def total_steps(self, global_batch_size: int) -> int:
        return self.args.schedule.total_steps

    def _is_update_point(self, done: int) -> bool:
        """An update is due after `done` steps and not made yet (a resumed run's first step may be one)."""
        return self.args.schedule.update_index(done) == self.update + 1

    # ---- setup -----------------------------------------------------------------------------------------
    def build_selector(self, ctx: RunContext) -> Any:
        cfg = self.component_config
        provided = {
            "dataset": self.train_data,
            "data_collator": partial(collate, pad_token_id=ctx.pad_token_id),
        }
        if not cfg.get("cache_dir"):
            provided["cache_dir"] = str(self.run_dir / "selector")
        selector = build_component("selector", cfg, ctx, **provided)
        if hasattr(selector, "bind"):
            selector.bind(
                SelectionContext(
                    train_data=self.train_data,
                    eval_data=self.eval_data,
                    pad_token_id=ctx.pad_token_id,
                    tokenizer=self.tokenizer,
                    device=ctx.device,
                    seed=self.args.seed,
                    batch_size=self.args.grad_batch_size or self.args.per_device_train_batch_size,
                    eval_batch_size=self.args.per_device_eval_batch_size,
                    max_tokens=self.args.scoring_max_tokens,
                    rank=ctx.rank,
                    world_size=ctx.world_size,
                    run_dir=self.run_dir,
                    target_domain=self.args.target_domain,
                    target_dataset=self.args.target_dataset,
                    lockstep=ctx.zero_stage == 3,
                )
            )
        return selector

    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.selector = self.build_selector(ctx)
        n_sel = self.args.update_step * ctx.global_batch_size
        pool = self.args.candidate_pool_size or len(self.train_data)
        if pool < n_sel:
            key = "trainer.candidate_pool_size" if self.args.candidate_pool_size else "the training set size"
            raise ValueError(
                f"each selection needs update_step x global batch = {n_sel} samples but {key} is {pool}; "
                "lower trainer.update_step or raise the pool."
            )
        if callable(getattr(self.selector, "check_memory", None)):  # e.g. tsds: its neighbour search
            self.selector.check_memory(ctx.model, num_candidates=pool, device=ctx.device)
        proj_dim = getattr(self.component_config, "proj_dim", None) if self.component_config else None
        if proj_dim:  # a gradient-feature selector: fail now, with the knob to turn, rather than OOM later
            check_gradient_feature_memory(
                ctx.model,
                grad_batch_size=self.args.grad_batch_size or self.args.per_device_train_batch_size,
                proj_dim=int(proj_dim),
                num_features=pool,
                device=ctx.device,
                forms_per_sample_gradients=getattr(self.component_config, "proj_type", None) != "kronecker",
            )

    def _first_plan(self) -> None:
        """The warmup samples, or with warmup_step=0 the first selection. Made on the first `next_indices`
        (not in `setup`), so a run resumed from a checkpoint, whose sampler is restored, never redoes it."""
        n_warm = self.args.warmup_step * self.ctx.global_batch_size
        if n_warm > 0:
            self.sampler = IndexListSampler(self._warmup_indices(n_warm))
        else:
            self._pending = self._run_update(0)

    def _warmup_indices(self, n: int) -> np.ndarray:
        replacement = n > len(self.train_data)
        if hasattr(self.selector, "warmup"):
            warm = self.selector.warmup(n, replacement=replacement)
        else:  # a user class not derived from Selector: the base class's seeded uniform warmup
            warm = Selector(self.train_data, None, None, None, seed=self.args.seed).warmup(n, replacement)
        warm = np.asarray(broadcast_object(list(map(int, warm))), dtype=np.int64)
        self._check_indices(warm, n, "warmup")
        if self.ctx.is_main:
            out = Path(self.run_dir) / "selection"
            out.mkdir(parents=True, exist_ok=True)
            (out / "warmup.json").write_text(
                json.dumps({"steps": self.args.warmup_step, "selected": warm.tolist()})
            )
        return warm

    def _check_indices(self, indices: np.ndarray, n: int, what: str) -> None:
        if len(indices) != n:
            raise ValueError(
                f"the selector's {what} returned {len(indices)} indices, expected exactly {n} "
                "(update_step x global batch size)."
            )
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self.train_data)):
            raise ValueError(f"the selector's {what} returned ids outside [0, {len(self.train_data)}).")

    # ---- the loop's hooks ----------------------------------------------------------------------------
    def next_indices(self, step: int, n: int) -> np.ndarray:
        if self.sampler is None:
            self._first_plan()
        out = self.sampler.next(n)
        self.trained_samples += n
        return out

    def plan_fixed_after(self, done: int) -> bool:
        return self.sampler is not None and not self._is_update_point(done)

    def on_step_end(self, done: int, ctx) -> dict[str, Any]:
        metrics, self._pending = self._pending, {}
        if done < self.total_steps(self.ctx.global_batch_size) and self._is_update_point(done):
            metrics.update(self._run_update(done))
        return metrics

    @property
    def epoch(self) -> float:
        return self.trained_samples / max(len(self.train_data), 1)

    # ---- one selection -------------------------------------------------------------------------------
    def candidates(self, update: int) -> np.ndarray | None:
        return candidate_pool(len(self.train_data), self.args.candidate_pool_size, self.args.seed, update)

    def _run_update(self, step: int) -> dict[str, Any]:
        ctx = self.ctx
        self.update += 1
        n = self.args.update_step * ctx.global_batch_size
        cands = self.candidates(self.update)
        if (
            getattr(self, "_unwrapped_model", None) is None
        ):  # once: accelerate re-reads package metadata per call
            self._unwrapped_model = unwrap_parallel(ctx.accelerator, ctx.model)
        model = self._unwrapped_model
        start = time.perf_counter()
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            selected = self.selector.select(
                model,
                step,
                n,
                candidates=cands,
                update_index=self.update,
                current_update_times=self.update,
                update_times=self.args.update_times,
                update_step=self.args.update_step,
                optimizer=ctx.optimizer,
            )
        if not model.training:  # (train() walks every module: only when the selector left eval mode on)
            model.train()
        ctx.optimizer.zero_grad(set_to_none=True)
        scores = getattr(self.selector, "last_scores", None)
        info = dict(getattr(self.selector, "last_info", None) or {})
        selected, scores = broadcast_object(
            ([int(i) for i in selected], None if scores is None else np.asarray(scores, dtype=np.float64))
        )
        selected = np.asarray(selected, dtype=np.int64)
        self._check_indices(selected, n, f"select() at step {step}")
        selected, scores = self.training_order(selected, scores)
        self.sampler = IndexListSampler(selected)
        seconds = time.perf_counter() - start
        metrics = self._metrics(selected, scores, cands, seconds)
        if ctx.is_main:
            self._save(step, selected, scores, cands, metrics, info)
        logger.info(
            f"selection {self.update}/{self.args.update_times} at step {step}: {n} samples in "
            f"{seconds:.1f}s, "
            + ", ".join(
                f"{k.rsplit('/', 1)[-1]}={v:.2f}"
                for k, v in metrics.items()
                if k.startswith("select/domain_fraction/")
            )
        )
        return metrics

    def training_order(self, selected: np.ndarray, scores) -> tuple[np.ndarray, np.ndarray | None]:
        """The selection in the order it is trained, its scores permuted alongside (they stay per id).
        `shuffle`: a permutation seeded by (trainer.seed, update number), the same on every rank and on
        resume; `selector`: as returned (top-k selectors return descending scores: a curriculum)."""
        if self.args.selection_order == "selector":
            return selected, scores
        perm = selection_permutation(len(selected), self.args.seed, self.update)
        if scores is not None and len(scores) == len(selected):
            scores = np.asarray(scores)[perm]
        return selected[perm], scores

    def _metrics(self, selected: np.ndarray, scores, cands, seconds: float) -> dict[str, float]:
        names = self.train_data.domain_names
        counts = np.bincount(self.train_data.domain_ids[selected], minlength=len(names))
        metrics: dict[str, float] = {
            "select/update": float(self.update),
            "select/time_s": seconds,
            "select/num_candidates": float(len(self.train_data) if cands is None else len(cands)),
            "select/unique_fraction": len(np.unique(selected)) / max(len(selected), 1),
        }
        for name, c in zip(names, counts):
            metrics[f"select/domain_fraction/{name}"] = float(c / max(len(selected), 1))
        pool = self.train_data.domain_ids if cands is None else self.train_data.domain_ids[np.asarray(cands)]
        for name, c in zip(names, np.bincount(pool, minlength=len(names))):
            metrics[f"select/pool_fraction/{name}"] = float(
                c / max(len(pool), 1)
            )  # the base rate (random's share)
        if scores is not None and len(scores) == len(selected) and len(scores):
            s = np.asarray(scores, dtype=np.float64)
            metrics.update(
                {
                    "select/score_mean": float(s.mean()),
                    "select/score_std": float(s.std()),
                    "select/score_min": float(s.min()),
                    "select/score_max": float(s.max()),
                }
            )
        return metrics

    def _save(
        self, step: int, selected: np.ndarray, scores, cands, metrics: dict[str, float], info: dict
    ) -> None:
        out = Path(self.run_dir) / "selection"
        out.mkdir(parents=True, exist_ok=True)
        names = self.train_data.domain_names
        counts = np.bincount(self.train_data.domain_ids[selected], minlength=len(names))
        record = {
            "update": self.update,
            "step": step,
            "selector": type(self.selector).__name__,
            "num_candidates": int(metrics["select/num_candidates"]),
            "domain_counts": {n: int(c) for n, c in zip(names, counts)},
            "metrics": metrics,
            "info": _jsonable(info),
            "selected": selected.tolist(),
            "scores": None if scores is None else [float(x) for x in scores],
        }
        (out / f"update_{self.update:03d}.json").write_text(json.dumps(record))
        summary = {k: v for k, v in record.items() if k not in ("selected", "scores")}
        with open(out / "summary.jsonl", "a") as f:
            f.write(json.dumps(summary) + "\n")

    # ---- resume --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "update": self.update,
            "trained_samples": self.trained_samples,
            "sampler": None if self.sampler is None else self.sampler.state_dict(),
            "selector": self.selector.state_dict() if hasattr(self.selector, "state_dict") else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.update, self.trained_samples = int(state["update"]), int(state["trained_samples"])
        if state.get("sampler") is not None:
            self.sampler = IndexListSampler([])
            self.sampler.load_state_dict(state["sampler"])
        if state.get("selector") is not None and hasattr(self.selector, "load_state_dict"):
            self.selector.load_state_dict(state["selector"])


def selection_permutation(n: int, seed: int, update: int) -> np.ndarray:
    """The training order of 1-based update `update`'s `n` selected samples (seeded by seed and update)."""
    return np.random.default_rng([int(seed), 0x0DE5, int(update)]).permutation(n)


def candidate_pool(num_items: int, size: int | None, seed: int, update: int) -> np.ndarray | None:
    """The seeded candidate pool of 1-based update `update`: `size` distinct sorted ids (None: all items)."""
    if not size or size >= num_items:
        return None
    rng = np.random.default_rng([int(seed), 0xCA4D, int(update)])
    return np.sort(rng.choice(num_items, size=size, replace=False))


def _jsonable(info: dict) -> dict:
    out = {}
    for k, v in info.items():
        if isinstance(v, (np.integer, np.floating)):
            v = v.item()
        out[str(k)] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
    return out
