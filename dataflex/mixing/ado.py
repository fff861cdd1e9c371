"""ADO, Adaptive Data Optimization (Jiang et al. 2024, "Adaptive Data Optimization: Dynamic Sample Selection
with Scaling Laws"; reference code github.com/yidingjiang/ado, `src/data_selectors/ado.py`), as a pure core.

Per domain k, ADO fits a power law of the (smoothed) training loss in the number of samples seen,
``L_k(n) = exp(e_k) + exp(a_k) / n ** alpha_k``, and samples each domain in proportion to how fast its
loss still falls, weighted by a prior and by how much the domain has been sampled recently:

    slope_k  = max(alpha_k, 0.05) * (L_k(n_k) - exp(e_k)) / n_k          (-dL/dn at the current n)
    target_k ∝ slope_k * prior_k * sqrt(h_k (1 - h_k))                   (h: EMA of the sampled shares)
    target   = clip_min(target, min_prob)                                (every domain keeps >= min_prob)
    p        = 0.9 * p_avg + 0.1 * target                                (the returned proportions)
    p_avg    = running mean of target over the steps (the prior counts as the steps before the first call)

Fit: for each domain, minimise ``Σ_t huber_δ(log L_t - logsumexp(a - α log n_t, e))`` (δ = 1e-3) plus the
code's box penalties ``max(α-0.8,0) - min(α,0.001) + max(a-6.5,0) - min(e-0.5,0)``, from every point of
the code's 8x8x8 start grid (a ∈ {-2..5}, e ∈ {-2, -1.5, .., 1.5}, α ∈ {0, .1, .., .7}), keeping the best.
The loss history is smoothed with a Savitzky-Golay filter (window 101, order 3) and both it and the
cumulative counts are subsampled as ``[ignore_steps::stride]`` (stride 10) before fitting.

Deviations from the authors' code (each is a knob or forced by the trainer; none changes the rule above):
- **Optimiser**: jaxopt LBFGS (tol 1e-5, maxiter 200) there; here batched Adam over all starts and domains
  at once (`fit_steps`=500 iterations, `fit_lr`=0.1 cosine-decayed), in float64 torch. Same objective, same
  start
  grid, same pick (the start with the lowest objective). On exact power-law data both recover the law.
- **Update cadence**: the code recomputes the target after *every* step and refits every `update_interval`
  steps. Here the target is computed when the trainer calls the mixer (`trainer.update_step`; set it to 1 for
  the code's cadence) and the law is refitted when at least `fit_interval` steps have passed since the last
  fit. Between two calls at steps t' < t the running mean counts the new target for the t - t' steps it
  stands for: ``p_avg <- ((t'+1) p_avg + (t - t') target) / (t + 1)``, which is the code's
  ``(1 - 1/(t+1)) p_avg + target/(t+1)`` exactly when the calls are one step apart.
- **Short histories**: scipy's savgol_filter raises when the history is shorter than the window; here the
  window shrinks to the longest odd length that fits (and smoothing is skipped below order + 2 points).
  The filter is our own numpy implementation of scipy's default ``mode="interp"`` (tested against it).
- **Per-domain loss**: the code averages per-sequence losses of a domain; the trainer gives token-mean
  losses per domain (identical for fixed-length pretraining blocks).
- **Prior**: the code's `mode=empirical` uses each domain's token count; here the prior is given by the
  caller (the component offers the domain sizes, uniform, or a list).
- **Invalid fits**: as in the code, a fit with a NaN/inf is dropped and the previous parameters are kept;
  before the first valid fit (or before `start_step`) there is no target and the caller keeps its mixture.
- Not ported: fitting on validation loss (`y_axis=val_loss`) and the per-step diagnostic metrics.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dataflex.config.component.mix import AdoConfig

HUBER_DELTA = 1e-3
"""The code's Huber threshold, on log-loss residuals."""
START_A = np.arange(-2.0, 6.0, 1.0)
START_E = np.arange(-2.0, 2.0, 0.5)
START_ALPHA = np.arange(0.0, 0.8, 0.1)


# ---- Savitzky-Golay smoothing (scipy.signal.savgol_filter, mode="interp") ----------------------------------
def savgol_smooth(y: np.ndarray, window: int = 101, order: int = 3) -> np.ndarray:
    """Smooths along the last axis: interior points by the least-squares polynomial of `order` over the
    centred `window`, the first/last window//2 points by the polynomial fitted to the first/last window
    (scipy's `mode="interp"`). The window shrinks to the longest odd length <= len(y); with fewer than
    order + 2 points the input is returned unchanged."""
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[-1]
    window = min(int(window), n if n % 2 else n - 1)
    if window < order + 2:
        return y.copy()
    half = window // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    vander = np.vander(x, order + 1, increasing=True)  # (window, order+1)
    pinv = np.linalg.pinv(vander)  # rows: coefficients of the fitted polynomial
    centre = pinv[0]  # the fitted value at x=0
    out = np.empty_like(y)
    # interior: a correlation with the centre weights
    windows = np.lib.stride_tricks.sliding_window_view(y, window, axis=-1)  # (..., n-window+1, window)
    out[..., half : n - half] = windows @ centre
    # edges: evaluate the polynomial fitted to the first / last window at the edge positions
    edge_x = np.arange(half, dtype=np.float64)
    coef_first = y[..., :window] @ pinv.T  # (..., order+1) in coordinates centred on the first window
    coef_last = y[..., n - window :] @ pinv.T
    first_v = np.vander(edge_x - half, order + 1, increasing=True)
    last_v = np.vander(edge_x + 1, order + 1, increasing=True)
    out[..., :half] = coef_first @ first_v.T
    out[..., n - half :] = coef_last @ last_v.T
    return out


# ---- the power law and its fit -----------------------------------------------------------------------------
def power_law(params: np.ndarray, n: np.ndarray | float) -> np.ndarray:
    """`exp(e) + exp(a) / n**alpha` for params (..., 3) = (a, e, alpha)."""
    p = np.asarray(params, dtype=np.float64)
    return np.exp(p[..., 1]) + np.exp(p[..., 0]) / np.asarray(n, dtype=np.float64) ** p[..., 2]


def _objective(
    params: torch.Tensor, log_n: torch.Tensor, log_loss: torch.Tensor, e_floor: float = 0.5
) -> torch.Tensor:
    """params (K, G, 3), log_n and log_loss (K, T) -> (K, G) objective of every start."""
    a, e, alpha = params[..., 0:1], params[..., 1:2], params[..., 2:3]
    first = a - alpha * log_n[:, None, :]
    pred = torch.logaddexp(first, e.expand_as(first))
    r = (log_loss[:, None, :] - pred).abs()
    huber = torch.where(r > HUBER_DELTA, HUBER_DELTA * (r - 0.5 * HUBER_DELTA), 0.5 * r**2).sum(-1)
    a, e, alpha = params[..., 0], params[..., 1], params[..., 2]
    penalty = (
        torch.clamp(alpha - 0.8, min=0)
        - torch.clamp(alpha, max=0.001)
        + torch.clamp(a - 6.5, min=0)
        - torch.clamp(e - e_floor, max=0)
    )
    return huber + penalty


def fit_power_laws(
    n: np.ndarray, loss: np.ndarray, fit_steps: int = 500, fit_lr: float = 0.1, e_floor: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Fits every domain's law. `n`, `loss`: (K, T) samples seen and loss. Returns params (K, 3) as
    (a, e, alpha) and the objective (K,) of the chosen start. `e_floor`: the penalty's lower bound on e (the
    code's 0.5: an irreducible loss of at least exp(0.5) = 1.65 nats)."""
    n_t = torch.as_tensor(np.asarray(n, dtype=np.float64))
    l_t = torch.as_tensor(np.asarray(loss, dtype=np.float64))
    if n_t.shape != l_t.shape or n_t.ndim != 2:
        raise ValueError(f"n and loss must both be (K, T); got {tuple(n_t.shape)} and {tuple(l_t.shape)}")
    if (n_t <= 0).any() or (l_t <= 0).any():
        raise ValueError("the power-law fit needs n > 0 and loss > 0 (it works on their logs)")
    grid = np.stack(np.meshgrid(START_A, START_E, START_ALPHA, indexing="ij"), -1).reshape(-1, 3)
    k = n_t.shape[0]
    params = torch.tensor(np.broadcast_to(grid, (k, *grid.shape)).copy(), requires_grad=True)
    log_n, log_loss = n_t.log(), l_t.log()
    opt = torch.optim.Adam([params], lr=fit_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(fit_steps, 1))
    for _ in range(fit_steps):
        opt.zero_grad()
        _objective(params, log_n, log_loss, e_floor).sum().backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        value = _objective(params, log_n, log_loss, e_floor)
        value = torch.where(torch.isfinite(value), value, torch.full_like(value, math.inf))
        best = value.argmin(dim=1)
        chosen = params[torch.arange(k), best].detach().numpy().copy()
        return chosen, value[torch.arange(k), best].numpy().copy()


def clip_min_probability(p: np.ndarray, min_prob: float) -> np.ndarray:
    """Every entry >= min_prob, then renormalised (the code's rule: rescale by the deficit of
    K * min_prob over the sum, floor at min_prob, normalise)."""
    p = np.asarray(p, dtype=np.float64)
    deficit = max(min_prob * len(p) - p.sum(), 0.0)
    floored = np.maximum(p * (1.0 - deficit) / p.sum(), min_prob)
    return floored / floored.sum()


# ---- the rule ----------------------------------------------------------------------------------------------
class AdoRule:
    """Holds the history and the fitted laws; `observe` after every step, `target(step)` at each update."""

    def __init__(self, prior: np.ndarray, config: AdoConfig | None = None) -> None:
        prior = np.asarray(prior, dtype=np.float64)
        if prior.ndim != 1 or len(prior) < 2 or (prior < 0).any() or not np.isclose(prior.sum(), 1.0):
            raise ValueError(f"ADO's prior must be >= 2 non-negative proportions summing to 1, got {prior}")
        self.cfg = config or AdoConfig()
        self.prior = prior
        self.counts = np.empty((0, len(prior)), dtype=np.float64)
        """(T, K) per-step n increments (the total batch for every domain when same_step_size)."""
        self.losses = np.empty((0, len(prior)), dtype=np.float64)
        """(T, K) per-step domain losses (missing ones imputed)."""
        self.sampled_share = prior.copy()
        """h: EMA of the per-step sampled shares."""
        self.p_avg = prior.copy()
        self.p = prior.copy()
        self.params: np.ndarray | None = None
        """(K, 3) fitted (a, e, alpha)."""
        self.last_fit: int | None = None
        self.last_target_step: int | None = None

    @property
    def k(self) -> int:
        return len(self.prior)

    def observe(self, sample_count: np.ndarray, loss: np.ndarray) -> None:
        """One step: samples per domain in the batch, and each domain's loss (NaN where it was absent:
        imputed by its previous loss, or the mean of this step's present losses at the first step)."""
        c = np.asarray(sample_count, dtype=np.float64)
        loss = np.asarray(loss, dtype=np.float64).copy()
        missing = ~np.isfinite(loss)
        if missing.any():
            if len(self.losses):
                loss[missing] = self.losses[-1, missing]
            else:
                loss[missing] = np.nanmean(loss) if (~missing).any() else np.nan
        increment = np.full(self.k, c.sum()) if self.cfg.same_step_size else c
        self.counts = np.vstack([self.counts, increment[None]])
        self.losses = np.vstack([self.losses, loss[None]])
        d = self.cfg.history_decay
        self.sampled_share = d * self.sampled_share + (1 - d) * c / c.sum()

    def fit(self) -> np.ndarray | None:
        """Fits the laws on the history; keeps (and returns) them when finite, else keeps the old ones."""
        c = self.cfg
        cum = np.cumsum(self.counts, axis=0)[c.ignore_steps :: c.fit_stride].T
        smooth = savgol_smooth(self.losses.T, c.smooth_window, c.smooth_order)[
            :, c.ignore_steps :: c.fit_stride
        ]
        if cum.shape[1] < 3:
            return None  # not enough points for three parameters
        params, _ = fit_power_laws(cum, np.maximum(smooth, 1e-12), c.fit_steps, c.fit_lr, c.e_floor)
        if np.isfinite(params).all():
            self.params = params
        return self.params

    def maybe_fit(self, step: int) -> None:
        if step < self.cfg.start_step:
            return
        if self.last_fit is None or step - self.last_fit >= self.cfg.fit_interval:
            self.fit()
            self.last_fit = step

    def slope(self) -> np.ndarray:
        """-dL/dn at the current n per domain, from the fitted laws."""
        assert self.params is not None
        a, e, alpha = self.params.T
        n = self.counts.sum(axis=0)
        current = power_law(self.params, n)
        return np.maximum(alpha, self.cfg.min_exponent) * (current - np.exp(e)) / n

    def instant_target(self) -> np.ndarray:
        """The normalised, floored target of this moment (before the running average)."""
        h = self.sampled_share
        weighted = self.slope() * self.prior * np.sqrt(h * (1.0 - h))
        return clip_min_probability(weighted / weighted.sum(), self.cfg.min_prob)

    def target(self, step: int) -> np.ndarray | None:
        """The proportions for the steps after `step` (refits first when due); None before `start_step`
        or before the first valid fit (the caller keeps its mixture)."""
        self.maybe_fit(step)
        if step < self.cfg.start_step or self.params is None:
            return None
        target = self.instant_target()
        self.p = self.cfg.avg_weight * self.p_avg + (1 - self.cfg.avg_weight) * target
        weight_old = step if self.last_target_step is None else self.last_target_step + 1
        self.p_avg = (weight_old * self.p_avg + (step + 1 - weight_old) * target) / (step + 1)
        self.last_target_step = step
        return self.p / self.p.sum()

    # ---- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts.copy(),
            "losses": self.losses.copy(),
            "sampled_share": self.sampled_share.copy(),
            "p_avg": self.p_avg.copy(),
            "p": self.p.copy(),
            "params": None if self.params is None else self.params.copy(),
            "last_fit": self.last_fit,
            "last_target_step": self.last_target_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("counts", "losses", "sampled_share", "p_avg", "p"):
            setattr(self, key, np.asarray(state[key], dtype=np.float64).copy())
        self.params = None if state["params"] is None else np.asarray(state["params"], dtype=np.float64)
        self.last_fit, self.last_target_step = state["last_fit"], state["last_target_step"]
