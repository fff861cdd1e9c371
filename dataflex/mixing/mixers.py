"""Mixers (the public `Mixer` API) over the pure cores of this package: a schedule, ADO and Aioli.

Under `trainer=dynamic_mix` as `component=schedule|ado|aioli` (presets in conf/components/dynamic_mix/, built
by the component contract: ADO's and Aioli's knobs are their typed `Config`, handed over as `config=`).

- `ScheduleMixer`: the proportions of a `MixtureSchedule` (a file, or an inline mapping) at each call. The
  trainer only changes proportions when it calls the mixer, so give it an update schedule that calls at every
  change point (for an exported run: the run's own warmup_step/update_step/update_times, kept in the
  schedule's `source.trainer`), or update_step=1 to follow a linear ramp step by step.
- `AdoMixer`: observes every step's per-domain training loss and batch counts; at each call returns ADO's
  proportions (`dataflex.mixing.ado`), or keeps the mixture in force before its first fit.
- `AioliMixer`: runs Aioli's rounds (`dataflex.mixing.aioli`) in segments of `lp_steps` steps: set
  trainer.update_step = lp_steps (checked at the second call), and for the restricted mode
  trainer.mixture_sample_rule=mixture with the prior as the initial proportions, trainer.warmup_step = the
  prior's steps and component.prior = the same proportions. It evaluates the
  per-domain eval loss (the run's eval data) at the start of each round and after every probe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dataflex.config.component.mix import AdoMixerConfig, AioliMixerConfig
from dataflex.train.mixer.base_mixer import DomainStats, Mixer, MixtureManager

from .ado import AdoRule
from .aioli import AioliRule
from .schedule import MixtureSchedule, load_schedule


class ScheduleMixer(Mixer):
    def __init__(
        self,
        mixture_manager: MixtureManager,
        path: str | None = None,
        schedule: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(mixture_manager)
        if (path is None) == (schedule is None):
            raise ValueError(
                "the schedule mixer needs exactly one of component.path=<schedule.yaml|json> and "
                "component.schedule={domains: [...], points: [...]}."
            )
        loaded = load_schedule(path) if path is not None else MixtureSchedule.from_dict(dict(schedule or {}))
        self._schedule = loaded.reorder(mixture_manager.names)

    @property
    def schedule(self) -> MixtureSchedule:
        return self._schedule

    def mix(self, model: Any, step_id: int, **kwargs: Any) -> np.ndarray:
        return self._schedule.at(int(step_id))

    def state_dict(self) -> dict[str, Any]:
        return {}  # the schedule is configuration, not state


def _prior(manager: MixtureManager, prior: str | Sequence[float]) -> np.ndarray:
    if isinstance(prior, str):
        if prior == "uniform":
            return manager.uniform()
        if prior == "stratified":
            sizes = manager.sizes.astype(np.float64)
            if sizes.sum() <= 0:
                raise ValueError(
                    "component.prior=stratified needs the domain sizes (not known when streaming)."
                )
            return sizes / sizes.sum()
        raise ValueError(f"component.prior={prior!r}: use stratified, uniform or a list of proportions.")
    values = np.asarray(list(prior), dtype=np.float64)
    if len(values) != len(manager.names) or (values < 0).any() or not np.isclose(values.sum(), 1.0):
        raise ValueError(
            f"component.prior={list(values)} must be {len(manager.names)} non-negative proportions summing "
            f"to 1 (domains {manager.names})."
        )
    return values


def _config(schema: type[Any], config: Any, knobs: dict[str, Any]) -> Any:
    """The typed config: the builder's `config`, or one made from keyword knobs (Python use)."""
    if config is not None and knobs:
        raise TypeError(f"give either config or keyword knobs, not both (got {sorted(knobs)}).")
    if config is None:
        return schema(**knobs)
    if isinstance(config, dict):
        return schema(**config)
    return config


class AdoMixer(Mixer):
    """ADO; every knob of `AdoMixerConfig` is a component key (component.start_step=..., ...), typed and
    checked by the component builder, which hands them over as `config`. From Python, the knobs may be
    given as keywords instead."""

    Config = AdoMixerConfig

    def __init__(
        self, mixture_manager: MixtureManager, config: AdoMixerConfig | None = None, **knobs: Any
    ) -> None:
        super().__init__(mixture_manager)
        self.config = _config(AdoMixerConfig, config, knobs)
        self._rule = AdoRule(_prior(mixture_manager, self.config.prior), self.config)

    def observe(self, stats: DomainStats) -> None:
        self._rule.observe(stats.sample_count, stats.loss)

    def mix(self, model: Any, step_id: int, **kwargs: Any) -> np.ndarray:
        target = self._rule.target(int(step_id))
        return self.mixture_manager.proportions if target is None else target

    def metrics(self) -> dict[str, float]:
        if self._rule.params is None:
            return {}
        out: dict[str, float] = {}
        for name, (_a, e, alpha) in zip(self.mixture_manager.names, self._rule.params):
            out[f"ado/irreducible/{name}"] = float(np.exp(e))
            out[f"ado/exponent/{name}"] = float(alpha)
        return out

    def state_dict(self) -> dict[str, Any]:
        return self._rule.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rule.load_state_dict(state)


class AioliMixer(Mixer):
    """Aioli; every knob of `AioliMixerConfig` is a component key (typed and checked by the component
    builder, handed over as `config`; from Python, keywords work too). The run's eval data, accelerator,
    pad id and ranks come from the run context by name."""

    Config = AioliMixerConfig

    def __init__(
        self,
        mixture_manager: MixtureManager,
        eval_data: Any = None,
        accelerator: Any = None,
        pad_token_id: int = 0,
        rank: int = 0,
        world_size: int = 1,
        config: AioliMixerConfig | None = None,
        **knobs: Any,
    ) -> None:
        super().__init__(mixture_manager)
        self.config = c = _config(AioliMixerConfig, config, knobs)
        prior, eval_max_per_domain, eval_batch_size = c.prior, c.eval_max_per_domain, c.eval_batch_size
        if eval_data is None:
            raise ValueError(
                "Aioli measures eval losses per domain: give the run eval data (data.eval_dataset or an eval "
                "split) with the training domains."
            )
        missing = sorted(set(mixture_manager.names) - set(eval_data.domain_names))
        if missing:
            raise ValueError(f"Aioli: the eval data has no rows of training domain(s) {missing}.")
        self._eval = eval_data
        self._device = None if accelerator is None else accelerator.device
        self._pad, self._rank, self._world = int(pad_token_id), int(rank), int(world_size)
        self._max_per_domain, self._batch = eval_max_per_domain, eval_batch_size
        p = None if prior is None else _prior(mixture_manager, prior)
        self._rule = AioliRule(len(mixture_manager.names), c, prior=p)
        self.last_step: int | None = None

    def eval_losses(self, model: Any) -> np.ndarray:
        import torch

        from dataflex.train.evaluation import evaluate

        metrics = evaluate(
            model,
            self._eval,
            batch_size=self._batch,
            pad_token_id=self._pad,
            device=self._device or torch.device("cpu"),
            rank=self._rank,
            world_size=self._world,
            max_per_domain=self._max_per_domain,
        )
        return np.asarray([metrics[f"eval/loss/{n}"] for n in self.mixture_manager.names], dtype=np.float64)

    def mix(self, model: Any, step_id: int, **kwargs: Any) -> np.ndarray:
        lp_steps = self._rule.cfg.lp_steps
        if self.last_step is not None and step_id - self.last_step != lp_steps:
            raise ValueError(
                f"Aioli's segments are lp_steps={lp_steps} steps, but the trainer called the mixer at steps "
                f"{self.last_step} and {step_id}: set trainer.update_step={lp_steps}."
            )
        self.last_step = int(step_id)
        losses = self.eval_losses(model) if self._rule.wants_losses else None
        return self._rule.advance(losses)

    def metrics(self) -> dict[str, float]:
        a = self._rule.last_params
        if a is None:
            return {}
        return {f"aioli/benefit/{n}": float(v) for n, v in zip(self.mixture_manager.names, a.sum(axis=0))}

    def state_dict(self) -> dict[str, Any]:
        return {**self._rule.state_dict(), "last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.last_step = state.pop("last_step", None)
        self._rule.load_state_dict(state)
