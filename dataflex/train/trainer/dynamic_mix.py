"""`trainer=dynamic_mix`: the Mix trainer. The loop stays the one loop; this strategy decides the domain
proportions of every global batch and asks a mixer (`component=<name>`) to change them on a schedule.

Schedule (W = warmup_step, U = update_step, T = update_times): W + U x T steps. The mixer is called after
step W, W + U, ..., W + (T-1) U (after no step when W = 0: before the first one); the proportions it returns
govern the batches from the very next step on, exactly: `next_indices` draws each step's global batch
from a `ProportionSampler` (deficit rule: every prefix within one sample of the proportions). With
`static_mix` the initial proportions hold for `train_step` steps and no mixer is called.

Visibility: `mixture/<domain>` at step 0 and at every update and `train/loss/<domain>` at every step go
to metrics.jsonl/trackers (with the mixer's own metrics, e.g. `odm/estimated_reward/<domain>`); the run
dir gets `mixture_history.json` (every change and the domain counts of every trained batch) at the end of
the run (main process only); the proportions are drawn in `plots/mixture_proportions.png`.

Data repeats: under no replacement each domain is drawn as reshuffled passes over its rows; when the
schedule needs more rows of a domain than it has, the domain is reshuffled and continues (a new pass),
as logged at start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataflex.config.trainer import DynamicMixTrainerConfig, check_proportion_values
from dataflex.data.sampling import ProportionSampler
from dataflex.train.checkpoint import resolve_resume
from dataflex.train.components import RunContext, build_component
from dataflex.train.context import StepContext
from dataflex.train.distributed import broadcast_object
from dataflex.train.ledger import default_stage
from dataflex.train.mixer.base_mixer import DomainStats, MixtureManager
from dataflex.train.mixer.budget import (
    check_feasible,
    domain_max_repetitions,
    domain_supply,
    expected_demand,
    item_token_counts,
)
from dataflex.train.mixer.history import MixtureHistory
from dataflex.train.mixer.static_mixer import KeepMixer
from dataflex.train.trainer.base import BaseTrainer
from dataflex.utils.logging import logger

HISTORY_JSON = "mixture_history.json"


def read_proportions_file(path: str, names: list[str]) -> np.ndarray:
    """`{"domains": [...], "proportions": [...]}` matched to `names` by domain name."""
    key = "trainer.mixture_proportions_file"
    try:
        content = json.loads(Path(path).read_text())
        domains, values = list(content["domains"]), [float(v) for v in content["proportions"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{key}={path}: expected JSON with 'domains' and 'proportions' lists ({err})."
        ) from err
    if sorted(domains) != sorted(names) or len(domains) != len(values):
        raise ValueError(
            f"{key}={path} has domains {domains} but the training data has {names}; the file must "
            "name every training domain once."
        )
    by_name = dict(zip(domains, values))
    ordered = [by_name[n] for n in names]
    check_proportion_values(ordered, key, names)
    return np.asarray(ordered, dtype=np.float64)


class DynamicMixTrainer(BaseTrainer):
    arguments_class = DynamicMixTrainerConfig
    component_kind = "mixer"
    args: DynamicMixTrainerConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.domain_names: list[str] = list(self.train_data.domain_names)
        self.streaming = bool(getattr(self.train_data, "streaming", False))
        """Domains read from streams (`dataflex.data.stream_training`): no rows up front, no sizes."""
        if self.streaming:
            self._check_streaming()
            self.domain_rows: Any = None
            sizes = [0] * len(self.domain_names)
        else:
            self.domain_rows = [
                np.asarray(self.train_data.domain_rows(d)) for d in range(len(self.domain_names))
            ]
            sizes = [len(r) for r in self.domain_rows]
        self.mixture = MixtureManager(self.domain_names, sizes, self.initial_proportions())
        self.item_tokens: Any = (
            item_token_counts(self.train_data) if self.args.mixture_unit == "tokens" else None
        )
        self.max_repetitions = domain_max_repetitions(self.train_data, self.domain_names)
        self.supply: Any = None if self.streaming else domain_supply(self.domain_rows, self.item_tokens)
        self.trained_tokens = np.zeros(len(self.domain_names), dtype=np.int64)
        """Input tokens trained per domain so far (mixture_unit=tokens; logged as achieved shares)."""
        self.mixer: Any = None
        """The Mixer (built in `setup`; none with static_mix)."""
        self.schedule = self.args.schedule
        self._drawn_with: dict[int, np.ndarray] = {}
        """The proportions each (0-based) step was drawn with, until the ledger has recorded it."""
        self.history = MixtureHistory(self.domain_names, self._schedule())
        target = (self.component_config or {}).get("_target_")
        if self.args.static_mix and target not in (None, f"{KeepMixer.__module__}.{KeepMixer.__qualname__}"):
            raise ValueError(
                f"trainer.static_mix=true never calls a mixer, but the component is {target}; use "
                "component=none (the default) or trainer.static_mix=false."
            )

    # ---- the plan ---------------------------------------------------------------------------------------
    def _check_streaming(self) -> None:
        if self.args.mixture_sample_rule == "stratified":
            raise ValueError(
                "trainer.mixture_sample_rule=stratified needs every domain's size, which a stream does "
                "not know up front; use uniform or mixture (init_mixture_proportions) when streaming."
            )
        if self.args.mixture_unit == "tokens":
            raise ValueError(
                "trainer.mixture_unit=tokens is not supported when training from streams (each slot's "
                "domain would depend on the lengths of samples other ranks read); use "
                "mixture_unit=samples, or the token store (drop streaming) to mix by tokens."
            )

    def initial_proportions(self) -> np.ndarray:
        rule, names = self.args.mixture_sample_rule, self.domain_names
        if rule == "uniform":
            return np.full(len(names), 1.0 / len(names))
        if rule == "stratified":
            sizes = np.asarray([len(r) for r in self.domain_rows], dtype=np.float64)
            return sizes / sizes.sum()
        if self.args.mixture_proportions_file is not None:
            return read_proportions_file(self.args.mixture_proportions_file, names)
        values = list(self.args.init_mixture_proportions or [])
        if len(values) != len(names):
            raise ValueError(
                f"trainer.init_mixture_proportions has {len(values)} values but the training data has "
                f"{len(names)} domains {names}; give one proportion per domain, in that order."
            )
        check_proportion_values(values, "trainer.init_mixture_proportions", names)
        return np.asarray(values, dtype=np.float64)

    def _schedule(self) -> dict[str, Any]:
        a = self.args
        return {
            "static_mix": a.static_mix,
            "warmup_step": a.warmup_step,
            "update_step": a.update_step,
            "update_times": a.update_times,
            "train_step": a.train_step,
            "total_steps": self.schedule.total_steps,
            "mixture_sample_rule": a.mixture_sample_rule,
        }

    def total_steps(self, global_batch_size: int) -> int:
        return self.schedule.total_steps

    def is_update(self, done: int) -> bool:
        """True when the mixer is called after `done` steps (its output governs the next step on)."""
        return self.schedule.is_update(done)

    # ---- hooks ------------------------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx
        init: Any = self.mixture.proportions
        if self.streaming:
            from dataflex.data.stream_training import StreamSampler

            self.train_data.open(self.max_repetitions)
            self.sampler = StreamSampler(self.train_data, init)
        else:
            self._check_budget(ctx.global_batch_size)
            self.sampler = ProportionSampler(
                self.domain_rows,
                init,
                seed=self.args.seed,
                domain_names=self.domain_names,
                unit=self.args.mixture_unit,
                item_tokens=self.item_tokens,
                max_uses=[None if r is None else s * r for s, r in zip(self.supply, self.max_repetitions)],
            )
            self._log_repeats(ctx.global_batch_size)
        self.mixture.attach(self.sampler)
        self.history.record(0, init, "init")
        if not self.args.static_mix:
            self.mixer = build_component(
                "mixer", self.component_config, ctx, mixture_manager=self.mixture
            ) or KeepMixer(self.mixture)
            self.defer_backward = bool(self.mixer.reweights_loss)
            logger.info(
                f"dynamic_mix: mixer {type(self.mixer).__name__}, {self.args.schedule_text} = "
                f"{self.schedule.total_steps} steps; initial proportions {self._listing(init)}"
            )
        if self.is_update(0):
            self._update(0, stats=None)
        resuming = resolve_resume(ctx.run_dir, self.args.resume_from_checkpoint) is not None
        if ctx.is_main and self.trackers and not resuming:  # a resumed run already logged step 0
            self.trackers.log(self._mixture_metrics(), step=0)

    def next_indices(self, step: int, n: int) -> np.ndarray:
        self._drawn_with[step] = self.mixture.proportions.copy()  # what drew this step (the ledger's stage)
        return self.sampler.next(n)

    def ledger_stages(self, ctx: StepContext) -> Any:
        """Each slot's provenance: `<dynamic_mix:mixer>:p=<its domain's proportion when the step was drawn>`,
        so the ledger holds the mixture in force at every step (streams: the mixer alone)."""
        for old in [s for s in self._drawn_with if s < ctx.step]:
            del self._drawn_with[old]
        base = default_stage(self)
        proportions = self._drawn_with.get(ctx.step)
        if proportions is None or self.streaming:
            return base
        labels = np.asarray([f"{base}:p={p:.4g}" for p in proportions], dtype=object)
        return labels[np.asarray(self.train_data.domain_ids)[np.asarray(ctx.indices, dtype=np.int64)]]

    def ledger_weights(self, ctx: StepContext) -> np.ndarray | None:
        """A loss-reweighting mixer's per-sample weights of the step relative to the plain token mean
        (DoReMi: its alpha of the sample's domain, normalised; see DoReMiMixer.sample_weights); else 1.0."""
        weights = getattr(self.mixer, "sample_weights", None)
        if weights is None or not self.mixer.reweights_loss or self.streaming:
            return None
        return weights(np.asarray(self.train_data.domain_ids)[np.asarray(ctx.indices, dtype=np.int64)])

    def plan_fixed_after(self, done: int) -> bool:
        return not self.is_update(done)  # only an update changes the proportions the sampler follows

    def before_backward(self, all_losses, micro_batches, ctx: StepContext) -> None:
        self.mixer.before_backward(all_losses, micro_batches, ctx, update=self._reweight_update(ctx.step))

    def compute_loss(self, losses, batch, ctx: StepContext) -> torch.Tensor:
        if self.mixer is not None and self.mixer.reweights_loss:
            return self.mixer.weighted_loss(losses, batch, ctx)
        return super().compute_loss(losses, batch, ctx)

    def on_step_end(self, done: int, ctx: StepContext) -> dict[str, Any]:
        stats = self._domain_stats(done, ctx)
        self.history.record_batch(stats.sample_count)
        metrics: dict[str, Any] = {
            f"train/loss/{n}": float(v)
            for n, v, seen in zip(self.domain_names, stats.loss, stats.present)
            if seen
        }
        if self.item_tokens is not None:
            metrics.update(self._achieved_tokens(ctx.indices))
        if self.mixer is not None:
            if done <= self.args.warmup_step and not getattr(self.mixer, "observe_warmup", True):
                pass  # the mixer asked not to see the warmup steps (ODM's released code)
            elif np.isfinite(stats.token_sum).all():
                self.mixer.observe(stats)
            else:
                logger.warning(
                    f"dynamic_mix: step {done} has non-finite losses; the mixer does not observe it"
                )
            if self.mixer.reweights_loss and self._reweight_update(ctx.step):
                metrics.update(self.mixer.metrics())  # DoReMi updated alpha during this step
        if self.is_update(done):
            self._update(done, stats)
            metrics.update(self._mixture_metrics())
            metrics.update(self.mixer.metrics())
        if done == self.schedule.total_steps:
            self._write_history()
        return metrics

    # ---- internals ----------------------------------------------------------------------------------------
    def _reweight_update(self, step: int) -> bool:
        """Whether a loss-reweighting mixer updates its weights during 0-based step `step`: at every step
        when it says so (`updates_every_step`: DoReMi, whatever the sampling schedule), else on the
        schedule."""
        return bool(getattr(self.mixer, "updates_every_step", False)) or self.is_update(step)

    def _domain_stats(self, done: int, ctx: StepContext) -> DomainStats:
        g = ctx.gathered()
        k = len(self.domain_names)
        domains = g["domain_ids"].long()
        token_sum = torch.zeros(k, dtype=torch.float64).index_add_(0, domains, g["token_sum"].double().cpu())
        token_count = torch.zeros(k, dtype=torch.float64).index_add_(
            0, domains, g["token_count"].double().cpu()
        )
        counts = np.bincount(domains.numpy(), minlength=k)
        return DomainStats(
            step=done, token_sum=token_sum.numpy(), token_count=token_count.numpy(), sample_count=counts
        )

    def _update(self, done: int, stats: DomainStats | None) -> None:
        model = self.ctx.model if hasattr(self, "ctx") else self.model
        raw = self.mixer.mix(model, done, stats=stats, train_data=self.train_data, eval_data=self.eval_data)
        proportions = broadcast_object(self._check_output(raw))  # one decision, rank 0's, on every rank
        self.sampler.set_proportions(proportions)  # the mixture manager reads them from the sampler
        self.history.record(done, proportions, type(self.mixer).__name__)
        logger.info(f"dynamic_mix: step {done}: proportions {self._listing(proportions)}")

    def _check_output(self, raw) -> np.ndarray:
        who = f"{type(self.mixer).__name__}.mix()"
        try:
            values = np.asarray(raw, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{who} must return one number per domain {self.domain_names}, got {raw!r}"
            ) from err
        if len(values) != len(self.domain_names):
            raise ValueError(
                f"{who} returned {len(values)} proportions for {len(self.domain_names)} domains "
                f"{self.domain_names}."
            )
        check_proportion_values(values.tolist(), f"{who} output", self.domain_names)
        return values

    def _mixture_metrics(self) -> dict[str, float]:
        return {f"mixture/{n}": float(p) for n, p in zip(self.domain_names, self.mixture.proportions)}

    def _listing(self, p) -> str:
        return ", ".join(f"{n}={v:.3f}" for n, v in zip(self.domain_names, p))

    def _achieved_tokens(self, indices: np.ndarray) -> dict[str, float]:
        """`mixture/achieved_tokens/<domain>`: each domain's share of the tokens trained so far."""
        ids = np.asarray(indices, dtype=np.int64)
        domains = np.asarray(self.train_data.domain_ids, dtype=np.int64)[ids]
        self.trained_tokens += np.bincount(
            domains, weights=self.item_tokens[ids], minlength=len(self.domain_names)
        ).astype(np.int64)
        total = max(int(self.trained_tokens.sum()), 1)
        return {
            f"mixture/achieved_tokens/{n}": float(t / total)
            for n, t in zip(self.domain_names, self.trained_tokens)
        }

    def _check_budget(self, global_batch_size: int) -> None:
        """max_repetitions: the steps whose proportions are known now (all of them with static_mix, else the
        warmup before the first mixer call) must fit, or the run stops here with the numbers. A mixer's later
        proportions are held to the bound as they are drawn (the sampler raises naming the domain)."""
        a = self.args
        steps = self.schedule.total_steps if a.static_mix else a.warmup_step
        if not steps or all(r is None for r in self.max_repetitions):
            return
        p = self.mixture.proportions
        demand = expected_demand(p, steps * global_batch_size, self.domain_rows, self.item_tokens)
        what = f"the {steps} steps" + ("" if a.static_mix else " before the first mixer update (warmup_step)")
        check_feasible(self.domain_names, p, demand, self.supply, self.max_repetitions, a.mixture_unit, what)

    def _log_repeats(self, global_batch_size: int) -> None:
        """Says which domains the schedule will draw more often than they have rows (they are reshuffled
        and repeated: a new pass), judged from the initial proportions."""
        total = self.schedule.total_steps * global_batch_size
        for name, p, rows in zip(self.domain_names, self.mixture.proportions, self.domain_rows):
            need = p * total
            if need > len(rows):
                logger.info(
                    f"dynamic_mix: at its initial proportion the schedule draws ~{need:.0f} samples of "
                    f"domain {name!r}, which has {len(rows)} rows: it is reshuffled and repeated "
                    f"(~{need / len(rows):.1f} passes)."
                )

    def _write_history(self) -> None:
        """At the end of the run (the live values are in metrics.jsonl as `mixture/<domain>`)."""
        if not (hasattr(self, "ctx") and self.ctx.is_main):
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.history.write_json(self.run_dir / HISTORY_JSON)

    @property
    def epoch(self) -> float:
        """Passes over the most-repeated domain so far."""
        if self.sampler is None:
            return 0.0
        if self.streaming:  # passes over the most-repeated domain's stream (this rank's)
            return float(max((r.passes for r in self.train_data.readers or []), default=0))
        return float(
            max(
                p + pos / len(r) for p, pos, r in zip(self.sampler.passes, self.sampler.pos, self.domain_rows)
            )
        )

    # ---- state (sampler + mixer + history) --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.state_dict(),
            "mixer": self.mixer.state_dict() if self.mixer else None,
            "proportions": self.mixture.proportions.tolist(),
            "history": self.history.as_dict(),
            "trained_tokens": self.trained_tokens.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if self.mixer is not None and state["mixer"] is not None:
            self.mixer.load_state_dict(state["mixer"])
        self.history.updates = list(state["history"]["updates"])
        self.history.trained_counts = list(state["history"]["trained_counts"])
        self.trained_tokens = np.asarray(state.get("trained_tokens", self.trained_tokens), dtype=np.int64)
