"""Mixing laws fitted on a sweep of mixtures, their held-out error, and a constrained proposer.

Input: a table of N runs, each a mixture ``r`` (K proportions) and its final losses ``y`` (M targets:
per-domain eval losses, or one target loss).

Laws (one per target i):
- ``log_linear`` (Ye et al. 2024, "Data Mixing Laws", eq. 3 / Aioli's `mixing_law_fitting.py linreg`):
  ``L_i(r) = c_i + k_i * exp(Σ_j t_ij r_j)``. Because Σ_j r_j = 1, adding δ to every t_ij and dividing k_i by
  e^δ gives the same function; we fix that gauge with ``t_iK = 0`` (the last domain is the reference), so the
  parameters are identifiable: same function class as theirs, K + 1 parameters per target instead of K + 2.
  Fitted by least squares (Levenberg-Marquardt, where they use scipy's curve_fit, also LM), started from
  `restarts` seeded exponent vectors with (c, k) solved exactly for each (variable projection), best kept.
- ``linear`` (RegMix's linear regression, Liu et al. 2024): ``L_i(r) = Σ_j w_ij r_j`` (an intercept is
  redundant on the simplex). RegMix's LightGBM option is not offered (lightgbm is not a dependency).

Held-out error: K-fold cross-validation (`cross_validate`), reporting per-target MAE / RMSE and the Spearman
rank correlation of predicted vs actual loss over the pooled out-of-fold predictions (RegMix's yardstick: a
law that ranks mixtures right is what the proposer needs).

Proposer (`propose`): minimise ``Σ_i w_i L_i(p)`` (default: the mean over targets) over the simplex under
``KL(p || prior) <= max_kl`` and ``p_j <= max_proportion_j`` (e.g. a token budget: the domain's tokens times
its allowed repetitions over the run's tokens). Each iteration takes the better of a Frank-Wolfe step (exact
linear oracle over that set: the greedy capped vertex, or a capped Gibbs mixture at the KL budget;
golden-section line search) and an entropic mirror-descent step (a capped, KL-limited multiplicative update
with an adapted step size); every iterate is feasible. The Frank-Wolfe gap at the end bounds the
suboptimality for a convex objective; for the log-linear law with k_i > 0 it is convex (a sum of
exponentials of affine functions), so this finds the optimum; otherwise a stationary point. Ye et al. /
Aioli minimise with Nelder-Mead over a softmax parametrisation without constraints; RegMix averages the
top-100 of 1M random mixtures. Neither bounds the distance to a prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

LAW_KINDS = ("log_linear", "linear")


class Law(Protocol):
    kind: str

    def predict(self, r: np.ndarray) -> np.ndarray: ...

    def gradient(self, p: np.ndarray, weights: np.ndarray) -> np.ndarray: ...

    def as_dict(self) -> dict[str, Any]: ...


@dataclass
class LogLinearLaw:
    c: np.ndarray
    """(M,) the loss as the exponent term vanishes."""
    k: np.ndarray
    """(M,) scale of the exponent term."""
    t: np.ndarray
    """(M, K) exponents per domain; t[:, -1] = 0 (the gauge)."""
    kind: str = "log_linear"

    def predict(self, r: np.ndarray) -> np.ndarray:
        """(N, K) or (K,) mixtures -> (N, M) or (M,) losses."""
        r = np.asarray(r, dtype=np.float64)
        return self.c + self.k * np.exp(r @ self.t.T)

    def gradient(self, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """d/dp of Σ_i weights_i L_i(p)."""
        e = np.exp(self.t @ p)  # (M,)
        return (weights * self.k * e) @ self.t

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "c": self.c.tolist(), "k": self.k.tolist(), "t": self.t.tolist()}


@dataclass
class LinearLaw:
    w: np.ndarray
    """(M, K): L_i(r) = w_i . r."""
    kind: str = "linear"

    def predict(self, r: np.ndarray) -> np.ndarray:
        return np.asarray(r, dtype=np.float64) @ self.w.T

    def gradient(self, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return weights @ self.w

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "w": self.w.tolist()}


# ---- fitting -----------------------------------------------------------------------------------------------
def _check_table(r: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(r, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if r.ndim != 2 or y.ndim != 2 or len(r) != len(y):
        raise ValueError(f"expected mixtures (N, K) and losses (N, M) or (N,); got {r.shape} and {y.shape}")
    if not (np.isfinite(r).all() and np.isfinite(y).all()):
        raise ValueError("the sweep table has non-finite values; drop the failed runs first")
    if (r < -1e-9).any() or not np.allclose(r.sum(1), 1.0, atol=1e-6):
        raise ValueError("every mixture must be non-negative and sum to 1")
    return r, y


def _fit_one_log_linear(r: np.ndarray, y: np.ndarray, restarts: int, seed: int, iters: int) -> np.ndarray:
    """Params [c, k, t_1..t_{K-1}] for one target by Levenberg-Marquardt from variable-projection starts."""
    n, kdim = r.shape
    x = r[:, :-1]  # t_K = 0: only the first K-1 exponents are free

    def residual(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = np.exp(x @ theta[2:])
        res = theta[0] + theta[1] * e - y
        jac = np.column_stack([np.ones(n), e, (theta[1] * e)[:, None] * x])
        return res, jac

    def project(t: np.ndarray) -> np.ndarray:
        design = np.column_stack([np.ones(n), np.exp(x @ t)])
        ck, *_ = np.linalg.lstsq(design, y, rcond=None)
        return np.concatenate([ck, t])

    rng = np.random.default_rng(seed)
    starts = [np.zeros(kdim - 1) + 0.5] + [rng.normal(0.0, 2.0, kdim - 1) for _ in range(restarts - 1)]
    best, best_cost = None, math.inf
    for t0 in starts:
        theta = project(t0)
        res, jac = residual(theta)
        cost, lam = float(res @ res), 1e-3
        for _ in range(iters):
            h, g = jac.T @ jac, jac.T @ res
            step = np.linalg.solve(h + lam * (np.diag(np.diag(h)) + 1e-12 * np.eye(len(theta))), -g)
            new = theta + step
            new_res, new_jac = residual(new)
            new_cost = float(new_res @ new_res)
            if np.isfinite(new_cost) and new_cost < cost:
                done = cost - new_cost <= 1e-15 * max(cost, 1e-30) or np.abs(step).max() < 1e-12
                theta, res, jac, cost, lam = new, new_res, new_jac, new_cost, max(lam / 3, 1e-12)
                if done:
                    break
            else:
                lam *= 4
                if lam > 1e12:
                    break
        if cost < best_cost:
            best, best_cost = theta, cost
    assert best is not None
    return best


def fit_law(
    r: np.ndarray,
    y: np.ndarray,
    kind: str = "log_linear",
    restarts: int = 16,
    seed: int = 0,
    iters: int = 300,
) -> LogLinearLaw | LinearLaw:
    """Fits one law per target column of `y` on mixtures `r`."""
    r, y = _check_table(r, y)
    if kind == "linear":
        w, *_ = np.linalg.lstsq(r, y, rcond=None)
        return LinearLaw(w.T.copy())
    if kind != "log_linear":
        raise ValueError(f"unknown law kind {kind!r}; choose one of {LAW_KINDS}")
    if len(r) < r.shape[1] + 1:
        raise ValueError(
            f"the log-linear law has K+1={r.shape[1] + 1} parameters per target; got {len(r)} runs"
        )
    thetas = np.stack([_fit_one_log_linear(r, y[:, i], restarts, seed, iters) for i in range(y.shape[1])])
    t = np.column_stack([thetas[:, 2:], np.zeros(len(thetas))])
    return LogLinearLaw(thetas[:, 0].copy(), thetas[:, 1].copy(), t)


# ---- held-out error ----------------------------------------------------------------------------------------
def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # average ranks of ties
        tie = x == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / denom) if denom > 0 else float("nan")


@dataclass
class FitReport:
    kind: str
    folds: int
    mae: list[float]
    """Per target: mean absolute out-of-fold error."""
    rmse: list[float]
    spearman: list[float]
    """Per target: rank correlation of out-of-fold predictions with the actual losses."""
    predictions: np.ndarray = field(repr=False)
    """(N, M) out-of-fold predictions."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "folds": self.folds,
            "mae": self.mae,
            "rmse": self.rmse,
            "spearman": self.spearman,
        }


def cross_validate(
    r: np.ndarray, y: np.ndarray, kind: str = "log_linear", folds: int = 5, seed: int = 0, **fit_kwargs: Any
) -> FitReport:
    """K-fold held-out error (folds = N: leave-one-out). Runs are assigned to folds by a seeded shuffle."""
    r, y = _check_table(r, y)
    n = len(r)
    folds = min(int(folds), n)
    if folds < 2:
        raise ValueError(f"cross-validation needs >= 2 runs and folds, got {n} runs and folds={folds}")
    assignment = np.random.default_rng(seed).permutation(n) % folds
    pred = np.empty_like(y)
    for f in range(folds):
        test = assignment == f
        law = fit_law(r[~test], y[~test], kind, seed=seed, **fit_kwargs)
        pred[test] = law.predict(r[test])
    err = pred - y
    return FitReport(
        kind,
        folds,
        np.abs(err).mean(0).tolist(),
        np.sqrt((err**2).mean(0)).tolist(),
        [spearman(pred[:, i], y[:, i]) for i in range(y.shape[1])],
        pred,
    )


# ---- the proposer ------------------------------------------------------------------------------------------
def _kl(p: np.ndarray, q: np.ndarray) -> float:
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def capped_normalize(log_w: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """p_j = min(cap_j, w_j s) with the s that makes Σ p = 1 (w = exp(log_w); -inf entries get 0): the KL
    projection of w onto the capped simplex. Exact: Σ_j min(cap_j, w_j s) is piecewise linear in s, with
    breakpoints cap_j / w_j; walk them in order."""
    log_w = np.asarray(log_w, dtype=np.float64)
    live = np.flatnonzero(np.isfinite(log_w))
    p = np.zeros_like(log_w)
    # the order in which domains hit their cap as s grows: increasing log(cap) - log(w)
    order = live[np.argsort(np.log(cap[live]) - log_w[live], kind="stable")]
    capped_mass = 0.0
    for m, j in enumerate(order):
        rest = order[m:]
        w_rest = np.exp(log_w[rest] - log_w[rest].max())  # relative weights of the uncapped domains
        share = (1.0 - capped_mass) * w_rest / w_rest.sum()
        if share[0] <= cap[j]:  # j, the first to hit its cap, does not: none of the rest does
            p[rest] = share
            return p
        p[j] = cap[j]
        capped_mass += cap[j]
    return p / p.sum()  # every domain at its cap


def _kl_limited(log_w_of: Any, q: np.ndarray, cap: np.ndarray, max_kl: float | None) -> np.ndarray:
    """The capped distribution from `log_w_of(lam)` with the smallest lam >= 0 whose KL to q is <= max_kl
    (lam weighs log q in; KL decreases as lam grows): bisection on lam."""
    p = capped_normalize(log_w_of(0.0), cap)
    if max_kl is None or _kl(p, q) <= max_kl:
        return p
    lo, hi = 0.0, 1.0
    while _kl(capped_normalize(log_w_of(hi), cap), q) > max_kl and hi < 1e12:
        lo, hi = hi, hi * 4.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _kl(capped_normalize(log_w_of(mid), cap), q) > max_kl:
            lo = mid
        else:
            hi = mid
    return capped_normalize(log_w_of(hi), cap)


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


def linear_oracle(g: np.ndarray, q: np.ndarray, cap: np.ndarray, max_kl: float | None) -> np.ndarray:
    """argmin g.p over {simplex, p <= cap, KL(p||q) <= max_kl, supp p ⊆ supp q}: the greedy vertex (fill the
    cheapest domains up to their caps) when it is within the budget, else the capped Gibbs mixture
    q exp(-g / lam) at KL = max_kl."""
    vertex = np.zeros_like(g)
    left = 1.0
    for j in np.argsort(g, kind="stable"):
        if q[j] > 0 and left > 0:
            vertex[j] = min(cap[j], left)
            left -= vertex[j]
    if max_kl is None or _kl(vertex, q) <= max_kl:
        return vertex
    log_q = _log(q)
    scale = max(float(np.ptp(g[q > 0])), 1e-300)
    # lam -> the Gibbs weights log q - g / lam, written with beta = 1 / lam as log q - g / (scale * lam')
    return _kl_limited(lambda lam: log_q - g / (scale * max(lam, 1e-12)), q, cap, max_kl)


def mirror_step(
    p: np.ndarray, g: np.ndarray, eta: float, q: np.ndarray, cap: np.ndarray, max_kl: float | None
) -> np.ndarray:
    """argmin over the feasible set of eta g.p + KL(p||p_prev): p ∝ (p_prev q^lam exp(-eta g))^(1/(1+lam)),
    capped, with the KL-to-prior multiplier lam found by bisection (0 when the budget is not binding)."""
    log_p, log_q = _log(p), _log(q)
    return _kl_limited(lambda lam: (log_p + lam * log_q - eta * g) / (1.0 + lam), q, cap, max_kl)


@dataclass
class Proposal:
    proportions: np.ndarray
    predicted: np.ndarray
    """(M,) the law's losses at the proposal."""
    objective: float
    kl_to_prior: float
    gap: float
    """Frank-Wolfe gap g.(p - s) at the proposal: for a convex objective, an upper bound on how far its value
    is above the constrained optimum (a certificate, not an estimate)."""

    def as_dict(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        names = list(names) if names is not None else [f"d{j}" for j in range(len(self.proportions))]
        return {
            "proportions": dict(zip(names, self.proportions.tolist())),
            "predicted_loss": self.predicted.tolist(),
            "objective": self.objective,
            "kl_to_prior": self.kl_to_prior,
            "optimality_gap": self.gap,
        }


def propose(
    law: LogLinearLaw | LinearLaw,
    prior: np.ndarray,
    target_weights: np.ndarray | None = None,
    max_kl: float | None = None,
    max_proportion: float | Sequence[float] | None = None,
    iterations: int = 200,
) -> Proposal:
    """The mixture minimising Σ_i target_weights_i L_i(p) under the constraints (see the module doc).

    Raises ValueError when the constraints leave no mixture (caps summing below 1, or no capped mixture
    within max_kl of the prior)."""
    q = np.asarray(prior, dtype=np.float64)
    k = len(q)
    if (q < 0).any() or not np.isclose(q.sum(), 1.0):
        raise ValueError(f"prior must be proportions summing to 1, got {q}")
    cap = (
        np.ones(k)
        if max_proportion is None
        else np.broadcast_to(np.asarray(max_proportion, float), (k,)).copy()
    )
    if cap[q > 0].sum() < 1.0 - 1e-12:
        raise ValueError(
            f"the per-domain caps {cap.tolist()} sum to {cap[q > 0].sum():g} < 1: no mixture fits"
        )
    m = len(law.predict(q))
    weights = np.full(m, 1.0 / m) if target_weights is None else np.asarray(target_weights, dtype=np.float64)

    def f(p: np.ndarray) -> float:
        return float(weights @ law.predict(p))

    p = capped_normalize(_log(q), cap)  # the closest capped mixture to the prior (in KL)
    if max_kl is not None and _kl(p, q) > max_kl + 1e-12:
        raise ValueError(
            f"no mixture within max_kl={max_kl} of the prior respects max_proportion: the closest one is "
            f"{np.round(p, 4).tolist()} at KL {_kl(p, q):.4g}; raise max_kl or the caps."
        )
    eta, value = 1.0, f(p)
    for _ in range(iterations):
        g = law.gradient(p, weights)
        # Frank-Wolfe candidate: the oracle's point, with a golden-section line search on the segment
        s = linear_oracle(g, q, cap, max_kl)
        candidates = [(f(s), s)]
        direction = s - p
        gamma = _golden(lambda x, p=p, d=direction: f(p + x * d))
        candidates.append((f(p + gamma * direction), p + gamma * direction))
        # entropic mirror-descent candidate (fast near an interior or face optimum), step size adapted
        while eta > 1e-12:
            md = mirror_step(p, g, eta, q, cap, max_kl)
            if f(md) < value:
                candidates.append((f(md), md))
                eta *= 2.0
                break
            eta *= 0.25
        best_value, best = min(candidates, key=lambda c: c[0])
        if best_value >= value - 1e-15 * max(abs(value), 1.0):
            break
        p, value = best, best_value
        eta = max(eta, 1e-6)
    p = np.maximum(p, 0.0)
    p = p / p.sum()
    g = law.gradient(p, weights)
    gap = float(g @ (p - linear_oracle(g, q, cap, max_kl)))
    return Proposal(p, law.predict(p), f(p), _kl(p, q), gap)


def _golden(fn: Any, iterations: int = 60) -> float:
    """argmin of fn on [0, 1] by golden-section search (exact for unimodal fn up to 0.618^iterations)."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = 0.0, 1.0
    x1, x2 = b - ratio * (b - a), a + ratio * (b - a)
    f1, f2 = fn(x1), fn(x2)
    for _ in range(iterations):
        if f1 <= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - ratio * (b - a)
            f1 = fn(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + ratio * (b - a)
            f2 = fn(x2)
    return 0.5 * (a + b)


def sample_mixtures(prior: np.ndarray, n: int, concentration: float = 1.0, seed: int = 0) -> np.ndarray:
    """n mixtures from Dirichlet(concentration * K * prior) (RegMix samples around the token prior; a
    concentration of 1 with a uniform prior is the flat Dirichlet)."""
    q = np.asarray(prior, dtype=np.float64)
    alpha = np.maximum(concentration * len(q) * q, 1e-3)
    return np.random.default_rng(seed).dirichlet(alpha, size=int(n))
