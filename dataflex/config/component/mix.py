"""Schemas of the mixers (`component=<name>` under `trainer=dynamic_mix`); torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from dataflex.config.trainer import check_proportion_values


@dataclass
class StaticMixerConfig:
    """`component=static`: a fixed proportion vector from the first update on."""

    _target_: str = "dataflex.train.mixer.static_mixer.StaticMixer"
    proportions: list[float] | None = None
    """One per domain, summing to 1; None: uniform."""

    def __post_init__(self) -> None:
        if self.proportions is not None:
            check_proportion_values(self.proportions, "component.proportions")


@dataclass
class RandomMixerConfig:
    """`component=random`: seeded random proportions, different at every update (seed + step)."""

    _target_: str = "dataflex.train.mixer.random_mixer.RandomMixer"
    seed: int = 42


@dataclass
class DoReMiMixerConfig:
    """`component=doremi`: DoReMi step 2 (Xie et al. 2023), group-DRO proxy training against a reference."""

    _target_: str = "dataflex.train.mixer.doremi.DoReMiMixer"
    reference_model_path: str = MISSING
    """Folder of the reference model (step 1's final_model). Required; missing/unloadable is an error."""
    eta: float = 1.0
    """Step size of the multiplicative-weights update of alpha (the paper's run scripts use 1)."""
    smoothing: float = 1e-3
    """c: alpha <- (1 - c) softmax(...) + c / k (the paper's run scripts use 1e-3)."""
    weights_file: str = "doremi_weights.json"
    """Written into the run dir: the running average of alpha that step 3 trains with."""
    loss_normalization: str = "alpha_tokens"
    """Proxy loss: `alpha_tokens` (the authors' code: sum_j alpha[d(j)] l(j) / sum_j alpha[d(j)] over the
    batch's tokens) or `domain_mean` (the paper's Algorithm 1 as written: sum_i alpha_i x domain i's
    token-mean loss). Equal when domains have equal token counts in the batch. alpha itself is updated at
    every step whatever trainer.warmup_step/update_step say (they only schedule mix(), a no-op for DoReMi)."""

    def __post_init__(self) -> None:
        if self.loss_normalization not in ("alpha_tokens", "domain_mean"):
            raise ValueError(
                f"component.loss_normalization must be alpha_tokens or domain_mean, got "
                f"{self.loss_normalization!r}."
            )
        if self.eta <= 0:
            raise ValueError(f"component.eta must be > 0, got {self.eta}.")
        if not 0.0 <= self.smoothing <= 1.0:
            raise ValueError(f"component.smoothing must be in [0, 1], got {self.smoothing}.")


@dataclass
class OdmMixerConfig:
    """`component=odm`: Online Data Mixing (Albalak et al. 2023), Exp3 over domains with loss rewards."""

    _target_: str = "dataflex.train.mixer.odm.OdmMixer"
    alpha: float = 0.9
    """Smoothing of the importance-weighted reward average: R <- alpha R + (1 - alpha) r / pi."""
    reward_scale: float = 1.0
    """Rewards are the domain's token-mean training loss times this (the authors' code divides by 10: 0.1)."""
    min_exploration_rate: float = 0.0
    """Floor on the exploration rate eps_t = min(1/K, sqrt(ln K / (K t))); must be <= 1/K."""
    reward: str = "loss"
    """loss (the paper) | learning_progress (documented deviation: the drop of the domain's loss, so an
    irreducible-loss domain earns nothing; see dataflex/train/mixer/odm.py)."""
    progress_fast: float = 0.9
    """learning_progress: beta of the fast moving average of each domain's loss."""
    progress_slow: float = 0.99
    """learning_progress: beta of the slow moving average (must exceed progress_fast)."""
    estimator: str = "smoothed"
    """smoothed (the paper's Algorithm 1: R <- alpha R + (1 - alpha) r / pi) | cumulative (the authors'
    released code: R += r / pi; with reward_scale=0.1 observe_warmup=false it reproduces that code, which
    divides by 10)."""
    observe_warmup: bool = True
    """Observe rewards during trainer.warmup_step (ours); the released code makes no update during warmup."""

    def __post_init__(self) -> None:
        if self.estimator not in ("smoothed", "cumulative"):
            raise ValueError(f"component.estimator must be smoothed or cumulative, got {self.estimator!r}.")
        if self.reward not in ("loss", "learning_progress"):
            raise ValueError(f"component.reward must be loss or learning_progress, got {self.reward!r}.")
        if not 0.0 <= self.progress_fast < self.progress_slow < 1.0:
            raise ValueError(
                "component.progress_fast and component.progress_slow must satisfy 0 <= fast < slow < 1, "
                f"got {self.progress_fast} and {self.progress_slow}."
            )
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"component.alpha must be in [0, 1), got {self.alpha}.")
        if self.reward_scale <= 0:
            raise ValueError(f"component.reward_scale must be > 0, got {self.reward_scale}.")
        if self.min_exploration_rate < 0:
            raise ValueError(f"component.min_exploration_rate must be >= 0, got {self.min_exploration_rate}.")


@dataclass
class DynamicMoeMixerConfig:
    """`component=dynamic_moe`: dynamic sampling for MoE models from per-domain router loads (Zhu et al.)."""

    _target_: str = "dataflex.train.mixer.dynamic_moe.DynamicMoeMixer"
    eta: float = 10.0
    """Step size: w <- softmax(log w + eta * Delta)."""
    smoothing: float = 0.05
    """c: w <- (1 - c) w + c / k."""
    distance: str = "l2"
    """Distance between domains' normalised router loads: `l2` or `cos` (1 - cosine similarity)."""
    samples_per_domain: int = 64
    """Rows per domain (first N of each domain of `source`) whose router loads are measured at each update."""
    batch_size: int = 32
    source: str = "eval"
    """Which split the per-domain batches come from: `eval` (needs an eval split) or `train`."""
    freeze_gate: bool = True
    """Freeze the router modules (only them: not the gate_proj of SwiGLU MLPs). True as the authors' dynamic
    runs."""
    router_layers: str = "last"
    """Whose routing makes a domain's gate load: `last` MoE layer (the authors' code) or `all` layers
    summed."""

    def __post_init__(self) -> None:
        if self.router_layers not in ("last", "all"):
            raise ValueError(
                f"component.router_layers={self.router_layers!r} is unknown; choose last or all."
            )
        if self.eta <= 0:
            raise ValueError(f"component.eta must be > 0, got {self.eta}.")
        if not 0.0 <= self.smoothing <= 1.0:
            raise ValueError(f"component.smoothing must be in [0, 1], got {self.smoothing}.")
        if self.distance not in ("l2", "cos"):
            raise ValueError(f"component.distance={self.distance!r} is unknown; choose l2 or cos.")
        if self.source not in ("eval", "train"):
            raise ValueError(f"component.source={self.source!r} is unknown; choose eval or train.")
        for key in ("samples_per_domain", "batch_size"):
            if getattr(self, key) <= 0:
                raise ValueError(f"component.{key} must be > 0, got {getattr(self, key)}.")


@dataclass
class AdoConfig:
    """ADO's knobs (dataflex/mixing/ado.py: the rule, its sources and deviations)."""

    ignore_steps: int = 0
    """Steps of history left out of every fit (the code's `ignore_steps`: the first losses are far from the
    law)."""
    start_step: int = 0
    """No target before this step (the caller keeps its mixture), and no fit."""
    fit_interval: int = 1000
    """Refit the laws when at least this many steps passed since the last fit (the code's update_interval,
    1000). The first call at or after start_step always fits. A fit is the expensive part (512 starts x K
    domains x 500 Adam steps over the subsampled history): seconds on a CPU, so keep it rare."""
    fit_stride: int = 10
    """Keep every `fit_stride`-th point of the history in the fit (the code's `[ignore_steps::10]`)."""
    smooth_window: int = 101
    """Savitzky-Golay window over the per-step losses (odd; shrinks to the history's length)."""
    smooth_order: int = 3
    """Savitzky-Golay polynomial order."""
    min_prob: float = 0.01
    """Every domain's target is at least this."""
    avg_weight: float = 0.9
    """p = avg_weight * p_avg + (1 - avg_weight) * target."""
    history_decay: float = 0.9
    """h <- decay * h + (1 - decay) * (this step's sampled shares)."""
    min_exponent: float = 0.05
    """The fitted alpha is floored at this in the slope (the code's 0.05)."""
    same_step_size: bool = True
    """True (the code's default): every domain's n is the total samples trained; False: its own samples."""
    fit_steps: int = 500
    """Adam iterations of the power-law fit."""
    fit_lr: float = 0.1
    """Adam's initial learning rate (cosine-decayed to 0)."""
    e_floor: float = 0.5
    """The fit penalises e < e_floor (the code's 0.5: an irreducible loss of at least 1.65 nats, a prior
    for web text); lower it for domains whose loss falls below that (small synthetic data)."""

    def __post_init__(self) -> None:
        checks = {
            "ignore_steps": (self.ignore_steps >= 0, ">= 0"),
            "start_step": (self.start_step >= 0, ">= 0"),
            "fit_interval": (self.fit_interval >= 1, ">= 1"),
            "fit_stride": (self.fit_stride >= 1, ">= 1"),
            "smooth_window": (self.smooth_window >= 1 and self.smooth_window % 2 == 1, "an odd number >= 1"),
            "smooth_order": (self.smooth_order >= 0, ">= 0"),
            "min_prob": (0.0 <= self.min_prob < 1.0, "in [0, 1)"),
            "avg_weight": (0.0 <= self.avg_weight <= 1.0, "in [0, 1]"),
            "history_decay": (0.0 <= self.history_decay < 1.0, "in [0, 1)"),
            "min_exponent": (self.min_exponent >= 0.0, ">= 0"),
            "fit_steps": (self.fit_steps >= 1, ">= 1"),
            "fit_lr": (self.fit_lr > 0.0, "> 0"),
        }
        for key, (ok, rule) in checks.items():
            if not ok:
                raise ValueError(f"component.{key} must be {rule}, got {getattr(self, key)}.")


@dataclass
class AdoMixerConfig(AdoConfig):
    """`component=ado`: ADO's knobs (`AdoConfig`) and the prior."""

    _target_: str = "dataflex.mixing.mixers.AdoMixer"
    prior: Any = "stratified"
    """stratified (domain sizes) | uniform | [p1, ..., pK] in the data's domain order."""


@dataclass
class AioliConfig:
    """Aioli's knobs (dataflex/mixing/aioli.py: the rule, its sources and deviations)."""

    lp_rounds: int = 4
    """Sweeps over the K probe mixtures per round (the code's --lp_rounds; README: 4 or 6)."""
    lp_steps: int = 4
    """Training steps per probe (README: 4); the trainer's update_step must equal it."""
    round_steps: int = 250
    """Steps per round, probes included (the code's --update_steps); a multiple of lp_steps, larger than
    the probes' lp_rounds * K * lp_steps."""
    eta: float = 0.2
    """Exponentiated-gradient step size (README: 0.1, 0.2, 0.5)."""
    ema: float | None = None
    """Smoothing of A across rounds (lower = more recency); None: no smoothing (README: start without)."""
    one_hot_factor: float = 0.625
    """Share of the probed domain in its probe mixture (1 = one-hot; README: below 1)."""
    diagonal: bool = False
    """Keep only A's diagonal (the code's --aioli_diagonal)."""
    normalize: bool = True
    """Shift and scale A before the update (the code's --aioli_normalize_A; README: always)."""
    start_from_prior: bool = False
    """Restricted mode only: multiply the prior instead of restarting from uniform (the code restarts)."""
    seed: int = 0
    """Seeds the probe orders."""

    def __post_init__(self) -> None:
        """Single-value checks (the ones that need K, the number of domains, run in `AioliRule`)."""
        checks = {
            "lp_rounds": (self.lp_rounds >= 1, ">= 1"),
            "lp_steps": (self.lp_steps >= 1, ">= 1"),
            "round_steps": (self.round_steps >= 1, ">= 1"),
            "eta": (self.eta > 0.0, "> 0"),
            "ema": (self.ema is None or 0.0 < self.ema <= 1.0, "null or in (0, 1]"),
            "one_hot_factor": (0.0 < self.one_hot_factor <= 1.0, "in (0, 1]"),
        }
        for key, (ok, rule) in checks.items():
            if not ok:
                raise ValueError(f"component.{key} must be {rule}, got {getattr(self, key)}.")


@dataclass
class AioliMixerConfig(AioliConfig):
    """`component=aioli`: Aioli's knobs (`AioliConfig`), the restricted mode's prior and the probe
    evaluations' size."""

    _target_: str = "dataflex.mixing.mixers.AioliMixer"
    prior: Any = None
    """Restricted mode: the prior mixture (uniform | stratified | [p1, ..., pK]); null: unrestricted."""
    eval_max_per_domain: int | None = 16
    """Eval rows per domain at each probe evaluation (Aioli evaluates 1 + lp_rounds x K times per round);
    null: the whole eval split."""
    eval_batch_size: int | None = 16
    """Batch size of those evaluations (null: the evaluation's default)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("eval_max_per_domain", "eval_batch_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"component.{key} must be null or >= 1, got {value}.")


@dataclass
class ScheduleMixerConfig:
    """`component=schedule`: proportions from a mixture schedule (dataflex/mixing/schedule.py); exactly one of
    `path` and `schedule`."""

    _target_: str = "dataflex.mixing.mixers.ScheduleMixer"
    path: str | None = None
    """Schedule file (.yaml/.yml/.json), e.g. the one `dataflex-export` writes."""
    schedule: Any = None
    """Or the schedule inline: {domains: [...], points: [{step: 0, proportions: [...]}, ...],
    interpolation: constant|linear}."""


@dataclass
class CustomMixerConfig:
    """`component=custom`: a mixer registered with `@register_mixer(name)` (the spec's custom-mixer API).

    `component.module` is imported first so its decorator runs; `component.params` are passed to the
    class's `__init__` (like the spec's `params:` block). Alternatively `component._target_=pkg.Class`
    (extra constructor args via `+component.<arg>=...`)."""

    _target_: str = "registry"
    name: str = "custom"
    """The registered mixer name."""
    module: str | None = None
    """Python module to import before the lookup (e.g. my_pkg.my_mixers), so its @register_mixer runs."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the mixer's __init__ (besides mixture_manager)."""


SCHEMAS: dict[str, type] = {
    "static": StaticMixerConfig,
    "random": RandomMixerConfig,
    "doremi": DoReMiMixerConfig,
    "odm": OdmMixerConfig,
    "dynamic_moe": DynamicMoeMixerConfig,
    "schedule": ScheduleMixerConfig,
    "ado": AdoMixerConfig,
    "aioli": AioliMixerConfig,
    "custom": CustomMixerConfig,
}
