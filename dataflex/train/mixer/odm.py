"""`component=odm`: Online Data Mixing (Albalak et al., 2023, "Efficient Online Data Mixing For Language
Model Pre-Training", Algorithm 1): the domains are the arms of an Exp3 bandit whose reward is the training
loss.

With K domains, after step t (t = steps trained so far):

    eps_t   = max(min_exploration_rate, min(1/K, sqrt(ln K / (K t))))        (eps_0 = 1/K)
    pi_t(i) = (1 - K eps_t) * exp(eps_{t-1} R_i) / sum_j exp(eps_{t-1} R_j) + eps_t
    R_i    <- alpha R_i + (1 - alpha) * r_i / pi(i)      for each domain i in the step's batch

where r_i = reward_scale x (token-mean training loss of domain i's samples in the step's global batch)
and pi is the mixture that produced that batch (importance weighting). The paper samples one domain per
batch; DataFlex batches mix domains by the current proportions, so every domain present in the step gets
its *own* reward (the original DataFlex credited the whole batch's loss to the first sample's domain).
Rewards are observed at every step (warmup included); `mix` recomputes pi at the trainer's updates, so
`update_step=1, warmup_step=0` is the paper's per-step algorithm (the paper updates every step: the
generic dynamic_mix default 50 + 25 x 10 is *not* ODM's schedule; conf/components/dynamic_mix/odm.yaml's
example command is). Every configured parameter is used (the original DataFlex ignored two of them).

Estimator (`estimator`): `smoothed` (default) is the paper's Algorithm 1, R <- alpha R + (1 - alpha) r / pi.
The authors' released code (megatron/data/data_sampling_utils.py, Exp3WeightUpdater) instead accumulates
R += (r / 10) / pi with no smoothing and makes no update during its warmup steps; `estimator=cumulative
reward_scale=0.1 observe_warmup=false` reproduces that code. We default to the paper's smoothed form
because the cumulative sum grows with t and, multiplied by eps_{t-1} ~ t^-1/2, its policy keeps sharpening
with training length; the paper states the smoothed estimator. `observe_warmup` (default true, ours)
lets the bandit see the warmup steps' rewards: harmless with the paper's warmup 0.

`reward=learning_progress` (a documented deviation, off by default): the paper's loss reward cannot tell an
irreducible loss from a learnable one, so Exp3 keeps feeding a pure-noise domain (highest loss, nothing to
learn). With this option r_i is domain i's learning progress instead — the drop of its training loss, a
slow minus a fast exponential moving average (betas `progress_slow`, `progress_fast`), the slope signal of
teacher-student curricula (Matiisen et al. 2017; Graves et al. 2017 use Exp3 with progress rewards too) —
divided by the largest |progress| of the step so rewards lie in [-1, 1] whatever the loss scale.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dataflex.config.component.mix import OdmMixerConfig
from dataflex.core.registry import register_mixer

from .base_mixer import DomainStats, Mixer, MixtureManager, softmax


def exploration_rate(num_domains: int, t: int, floor: float = 0.0) -> float:
    """eps_t = min(1/K, sqrt(ln K / (K t))) with eps_0 = 1/K, floored at `floor`."""
    k = num_domains
    eps = 1.0 / k if t <= 0 else min(1.0 / k, math.sqrt(math.log(k) / (k * t)))
    return max(floor, eps)


def exp3_policy(estimated_reward: np.ndarray, t: int, floor: float = 0.0) -> np.ndarray:
    """pi_t = (1 - K eps_t) softmax(eps_{t-1} R) + eps_t."""
    k = len(estimated_reward)
    eps_t, eps_prev = exploration_rate(k, t, floor), exploration_rate(k, t - 1, floor)
    return (1.0 - k * eps_t) * softmax(eps_prev * np.asarray(estimated_reward, dtype=np.float64)) + eps_t


def update_loss_averages(
    fast: np.ndarray,
    slow: np.ndarray,
    loss: np.ndarray,
    present: np.ndarray,
    beta_fast: float,
    beta_slow: float,
) -> tuple[np.ndarray, np.ndarray]:
    """EMAs of each domain's training loss over the steps it was present; a domain's first loss starts
    both."""
    fast, slow = fast.copy(), slow.copy()
    first = present & np.isnan(fast)
    fast[first] = slow[first] = loss[first]
    seen = present & ~first
    fast[seen] = beta_fast * fast[seen] + (1 - beta_fast) * loss[seen]
    slow[seen] = beta_slow * slow[seen] + (1 - beta_slow) * loss[seen]
    return fast, slow


def normalised_progress(fast: np.ndarray, slow: np.ndarray, present: np.ndarray) -> np.ndarray:
    """(slow - fast) / max |slow - fast| over the present domains: > 0 where the loss is falling."""
    progress = np.nan_to_num(slow - fast)
    top = float(np.abs(progress[present]).max()) if present.any() else 0.0
    return progress / top if top > 0 else np.zeros_like(progress)


def cumulative_reward_update(
    estimated_reward: np.ndarray, rewards: np.ndarray, pi: np.ndarray, observed: np.ndarray
) -> np.ndarray:
    """The authors' code: R_i <- R_i + r_i / pi_i for the observed domains (no smoothing)."""
    out = np.asarray(estimated_reward, dtype=np.float64).copy()
    idx = np.flatnonzero(observed & (pi > 0))
    out[idx] = out[idx] + rewards[idx] / pi[idx]
    return out


def smoothed_reward_update(
    estimated_reward: np.ndarray, rewards: np.ndarray, pi: np.ndarray, observed: np.ndarray, alpha: float
) -> np.ndarray:
    """R_i <- alpha R_i + (1 - alpha) r_i / pi_i for the observed domains; the others keep their estimate."""
    out = np.asarray(estimated_reward, dtype=np.float64).copy()
    idx = np.flatnonzero(observed & (pi > 0))
    out[idx] = alpha * out[idx] + (1.0 - alpha) * rewards[idx] / pi[idx]
    return out


@register_mixer("odm")
class OdmMixer(Mixer):
    Config = OdmMixerConfig

    def __init__(self, mixture_manager: MixtureManager, config: OdmMixerConfig | None = None) -> None:
        super().__init__(mixture_manager)
        self.config = c = config or OdmMixerConfig()
        k = len(mixture_manager.names)
        if c.min_exploration_rate > 1.0 / k:
            raise ValueError(
                f"component.min_exploration_rate={c.min_exploration_rate} exceeds 1/K = {1.0 / k:.4g} "
                f"for K={k} domains {mixture_manager.names}; the policy would not be a distribution."
            )
        self.observe_warmup = c.observe_warmup
        self.estimated_reward = np.zeros(k)
        self.last_reward = np.full(k, np.nan)
        self.loss_fast = np.full(k, np.nan)  # learning_progress only
        self.loss_slow = np.full(k, np.nan)

    def observe(self, stats: DomainStats) -> None:
        if self.config.reward == "loss":
            raw = np.nan_to_num(stats.loss, nan=0.0)
        else:
            self.loss_fast, self.loss_slow = update_loss_averages(
                self.loss_fast,
                self.loss_slow,
                np.nan_to_num(stats.loss, nan=0.0),
                stats.present,
                self.config.progress_fast,
                self.config.progress_slow,
            )
            raw = normalised_progress(self.loss_fast, self.loss_slow, stats.present)
        rewards = self.config.reward_scale * raw
        pi = self.mixture_manager.proportions
        if self.config.estimator == "cumulative":
            self.estimated_reward = cumulative_reward_update(
                self.estimated_reward, rewards, pi, stats.present
            )
        else:
            self.estimated_reward = smoothed_reward_update(
                self.estimated_reward, rewards, pi, stats.present, self.config.alpha
            )
        self.last_reward = np.where(stats.present, rewards, np.nan)

    def mix(self, model, step_id: int, **kwargs: Any) -> np.ndarray:
        pi = exp3_policy(self.estimated_reward, int(step_id), self.config.min_exploration_rate)
        return pi / pi.sum()  # already sums to 1; removes float drift

    def metrics(self) -> dict[str, float]:
        return {
            f"odm/estimated_reward/{n}": float(r)
            for n, r in zip(self.mixture_manager.names, self.estimated_reward)
        }
