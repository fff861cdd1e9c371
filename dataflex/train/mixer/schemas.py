"""Schemas of `trainer=dynamic_mix`, its mixers (`component=<name>`) and the tiny MoE model.

Kept free of torch imports: these dataclasses are registered at CLI start. `__post_init__` checks run in
`dataflex.run.validate` (trainer, model) or when the trainer builds its component (component), before any
training step, and name the offending key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from dataflex.config.model import FinetuningConfig
from dataflex.config.trainer import TrainingArguments

MIXTURE_SAMPLE_RULES = ("mixture", "stratified", "uniform")


# ---------------------------------------------------------------------------------------------- trainer
@dataclass
class DynamicMixArguments(TrainingArguments):
    """Training arguments of the Mix trainer: the plain ones plus the mixture and its update schedule.

    Total optimizer steps = ``warmup_step + update_step * update_times`` (or ``train_step`` with
    ``static_mix``); ``max_steps`` is derived from that schedule."""

    max_steps: int = 0
    """Derived from the schedule; leave at 0 (a value > 0 must equal the schedule's total, else an error)."""
    mixture_sample_rule: str = "uniform"
    """How the initial proportions are set: `mixture` (init_mixture_proportions or mixture_proportions_file,
    then adjusted by the mixer), `stratified` (proportional to each domain's size), `uniform` (equal)."""
    init_mixture_proportions: list[float] | None = None
    """One proportion per domain, in the data's domain order; must sum to 1 (not normalised for you).
    Only with mixture_sample_rule=mixture."""
    mixture_proportions_file: str | None = None
    """A JSON file `{"domains": [...], "proportions": [...]}` (e.g. DoReMi step 2's doremi_weights.json),
    matched to the data's domains by name; an alternative to init_mixture_proportions (rule mixture)."""
    static_mix: bool = False
    """Keep the initial proportions for the whole run (no mixer calls) and train `train_step` steps."""
    warmup_step: int = 50
    """Steps of training on the initial proportions before the first mixer call."""
    update_step: int = 25
    """The mixer is called every `update_step` steps after warmup; its proportions govern the next steps."""
    update_times: int = 10
    """Number of mixer calls (the last one governs the final `update_step` steps)."""
    train_step: int | None = None
    """Total steps with static_mix=true (required there, refused otherwise)."""
    mixture_unit: str = "samples"
    """What the proportions are shares of: `samples` (each prefix of the batches within one sample per domain of
    them) or `tokens` (shares of the trained tokens, as OLMo-core's source mixtures; every item's length is
    read once at start; logged as `mixture/achieved_tokens/<domain>`). Pretrain blocks all have cutoff_len
    tokens, so there both units give the same batches."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mixture_unit not in ("samples", "tokens"):
            raise ValueError(
                f"trainer.mixture_unit={self.mixture_unit!r} is unknown; choose samples or tokens."
            )
        if self.mixture_sample_rule not in MIXTURE_SAMPLE_RULES:
            raise ValueError(
                f"trainer.mixture_sample_rule={self.mixture_sample_rule!r} is unknown; choose one of "
                f"{MIXTURE_SAMPLE_RULES}."
            )
        given = [
            k
            for k in ("init_mixture_proportions", "mixture_proportions_file")
            if getattr(self, k) is not None
        ]
        if self.mixture_sample_rule == "mixture":
            if not given:
                raise ValueError(
                    "trainer.mixture_sample_rule=mixture needs trainer.init_mixture_proportions=[...] "
                    "(one per domain) or trainer.mixture_proportions_file=<json>; or use "
                    "mixture_sample_rule=uniform|stratified."
                )
            if len(given) == 2:
                raise ValueError(
                    "Set only one of trainer.init_mixture_proportions and trainer.mixture_proportions_file."
                )
        elif given:
            raise ValueError(
                f"trainer.{given[0]} is only used with trainer.mixture_sample_rule=mixture (it is "
                f"{self.mixture_sample_rule!r}); set the rule to mixture or drop the key."
            )
        if self.init_mixture_proportions is not None:
            check_proportion_values(self.init_mixture_proportions, "trainer.init_mixture_proportions")
        if self.mixture_proportions_file is not None and not Path(self.mixture_proportions_file).is_file():
            raise FileNotFoundError(
                f"trainer.mixture_proportions_file={self.mixture_proportions_file}: no such file "
                f"({Path(self.mixture_proportions_file).resolve()})."
            )
        if self.static_mix:
            if self.train_step is None or self.train_step <= 0:
                raise ValueError(
                    f"trainer.static_mix=true needs trainer.train_step > 0 (the number of steps), got "
                    f"{self.train_step}."
                )
        else:
            if self.train_step is not None:
                raise ValueError(
                    "trainer.train_step only applies with trainer.static_mix=true; the dynamic schedule "
                    "has warmup_step + update_step * update_times steps."
                )
            if self.warmup_step < 0:
                raise ValueError(f"trainer.warmup_step must be >= 0, got {self.warmup_step}.")
            for key in ("update_step", "update_times"):
                if getattr(self, key) <= 0:
                    raise ValueError(f"trainer.{key} must be > 0, got {getattr(self, key)}.")
        if self.max_steps > 0 and self.max_steps != self.schedule_steps:
            raise ValueError(
                f"trainer.max_steps={self.max_steps} conflicts with the mix schedule of "
                f"{self.schedule_steps} steps ({self.schedule_text}); dynamic_mix derives the step count "
                "from the schedule: leave trainer.max_steps=0."
            )

    @property
    def schedule_steps(self) -> int:
        if self.static_mix:
            return int(self.train_step or 0)
        return self.warmup_step + self.update_step * self.update_times

    @property
    def schedule_text(self) -> str:
        if self.static_mix:
            return f"static_mix: train_step={self.train_step}"
        return (
            f"warmup_step={self.warmup_step} + update_step={self.update_step} x "
            f"update_times={self.update_times}"
        )


@dataclass
class DynamicMixTrainerConfig(DynamicMixArguments):
    """`trainer=dynamic_mix`: domain proportions decided by a mixer (`component=<name>`) during training."""

    _target_: str = "dataflex.train.trainer.dynamic_mix.DynamicMixTrainer"


def check_proportion_values(values: list[float], key: str, names: list[str] | None = None) -> None:
    """Finite, >= 0, not all zero, summing to 1 (within 1e-6). Proportions are never normalised silently: a
    vector that does not sum to 1 is more often a typo or a wrong domain order than an intent."""
    labels = (
        list(names)
        if names is not None and len(names) == len(values)
        else [f"#{i}" for i in range(len(values))]
    )
    listing = ", ".join(f"{n}={v:g}" for n, v in zip(labels, values))
    if not values:
        raise ValueError(f"{key} is empty; give one proportion per domain.")
    if any(not math.isfinite(float(v)) for v in values):
        raise ValueError(f"{key} must be finite numbers: {listing}.")
    negative = [n for n, v in zip(labels, values) if v < 0]
    if negative:
        raise ValueError(f"{key} must be >= 0; negative for {negative}: {listing}.")
    total = float(sum(values))
    if total <= 0:
        raise ValueError(f"{key} are all zero ({listing}); at least one domain needs a proportion > 0.")
    if abs(total - 1.0) > 1e-6:
        raise ValueError(
            f"{key} must sum to 1 (they sum to {total:.6g}: {listing}); DataFlex does not normalise "
            "them for you, divide by their sum."
        )


# ---------------------------------------------------------------------------------------------- mixers
@dataclass
class NoMixerConfig:
    """`component=none` under dynamic_mix: no mixer; the proportions stay as the mixture rule set them."""

    _target_: str = "dataflex.train.mixer.static_mixer.KeepMixer"


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
    """smoothed (the paper's Algorithm 1: R <- alpha R + (1 - alpha) r / pi) | cumulative (the authors' released
    code: R += r / pi; with reward_scale=0.1 observe_warmup=false it reproduces that code, which divides by 10)."""
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
    """Freeze the router modules (only them: not the gate_proj of SwiGLU MLPs). True as the authors' dynamic runs."""
    router_layers: str = "last"
    """Whose routing makes a domain's gate load: `last` MoE layer (the authors' code) or `all` layers summed."""

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


# ---------------------------------------------------------------------------------------------- model
@dataclass
class TinyMoeModelConfig(FinetuningConfig):
    """`model=tiny_moe`: a small Qwen2-MoE (routed experts + a shared SwiGLU expert) built from config."""

    _target_: str = "dataflex.models.tiny_moe.build_tiny_moe_model"
    tokenizer_path: str | None = None
    hidden_size: int = 96
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    num_experts: int = 4
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 96
    shared_expert_intermediate_size: int = 96
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.num_experts_per_tok <= self.num_experts:
            raise ValueError(
                f"model.num_experts_per_tok must be in [1, model.num_experts={self.num_experts}], got "
                f"{self.num_experts_per_tok}."
            )


SCHEMAS: dict[str, dict[str, type]] = {
    "trainer": {"dynamic_mix": DynamicMixTrainerConfig},
    "component": {
        "dynamic_mix_none": NoMixerConfig,
        "dynamic_mix_static": StaticMixerConfig,
        "dynamic_mix_random": RandomMixerConfig,
        "dynamic_mix_doremi": DoReMiMixerConfig,
        "dynamic_mix_odm": OdmMixerConfig,
        "dynamic_mix_dynamic_moe": DynamicMoeMixerConfig,
        "dynamic_mix_custom": CustomMixerConfig,
    },
    "model": {"tiny_moe": TinyMoeModelConfig},
}
