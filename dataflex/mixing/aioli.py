"""Aioli (Chen et al. 2024, "Aioli: A Unified Optimization Framework for Language Model Data Mixing";
reference code github.com/HazyResearch/aioli, `trainer/aioli_trainer.py`), as a pure core: no model, no
data; the caller trains and evaluates, this decides the proportions.

Aioli assumes a linear dynamic mixing law per round t, ``L_i(after) = L_i(before) - Σ_j A_ij p_j`` (the drop
of domain i's eval loss when training on mixture p), estimates A from the run itself, then takes an
exponentiated-gradient step on the proportions:

Round (the code's `update_steps` training steps):
1. **LearnParams** (Algorithm 2): eval every domain (``L^0``); then for each probe j in `lp_rounds` random
   permutations of the K domains: train `lp_steps` steps on the probe mixture (``one_hot_factor`` f on domain
   j, ``(1-f)/(K-1)`` on each other), eval, and add ``L^{before} - L^{after}`` to column j of a K x K matrix.
   Divide by `lp_rounds`. With f < 1 the probes are not one-hot, so each row is unmixed by solving
   ``W a_i = row_i`` (W: the probe mixtures as rows); `diagonal` keeps only ``A_ii = row_i[i] / f``.
2. **Normalise** (`normalize`, the code's `--aioli_normalize_A`): shift A by its minimum when negative, then
   divide by its sum.
3. **Update**: ``w <- w * exp(eta * Σ_i A_i)`` (column sums: how much training on j lowers all losses),
   starting from uniform weights; with `ema` the step uses the smoothed matrix
   ``E <- (1 - ema) A + ema E`` and restarts from uniform: ``w = exp(eta * Σ_i E_i)``.
4. Train the rest of the round on ``w / Σ w``.

**Restricted** mode (the README's): train `prior_steps` on a prior mixture (e.g. another method's output),
then run the rounds above. The released code then restarts the weights from uniform, so the prior only
shapes the model the rounds start from; `start_from_prior=True` makes the update multiply the prior instead
(``w_0 = prior``), the reading of "Aioli adjusts the prior" in the README. Default: the code's behaviour.

Deviations from the authors' code:
- The probe order of round r comes from ``default_rng([seed, r])`` (same on every rank, reproducible after a
  resume) instead of the global ``np.random.permutation``.
- The round is counted in segments of `lp_steps` steps (the trainer calls the mixer at segment boundaries),
  so the exploit part is a whole number of segments; in the code it is ``update_steps - lp_rounds*lp_steps*K``
  steps (its `n_data` subtracts steps from samples, but the loop breaks at ``counter % update_steps == 0``,
  so that is what runs).
- Not ported: the Skill-it warm start (`graph_path`), and the code's re-use of the learning-rate schedule
  across probes (the caller's trainer keeps one schedule for the whole run, as the code does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dataflex.config.component.mix import AioliConfig


def probe_mixture(k: int, j: int, one_hot_factor: float) -> np.ndarray:
    """f on domain j, (1 - f) / (K - 1) on each other domain."""
    if k == 1:
        return np.ones(1)
    p = np.full(k, (1.0 - one_hot_factor) / (k - 1))
    p[j] = one_hot_factor
    return p


def probe_matrix(k: int, one_hot_factor: float) -> np.ndarray:
    """W: row j is probe j's mixture."""
    return np.stack([probe_mixture(k, j, one_hot_factor) for j in range(k)])


def probe_order(k: int, lp_rounds: int, seed: int, round_index: int) -> np.ndarray:
    """`lp_rounds` permutations of the domains, concatenated (the code's `mixture_order`)."""
    rng = np.random.default_rng([int(seed), int(round_index)])
    return np.concatenate([rng.permutation(k) for _ in range(lp_rounds)])


def estimate_params(
    loss_0: np.ndarray,
    order: np.ndarray,
    losses_after: np.ndarray,
    lp_rounds: int,
    one_hot_factor: float,
    diagonal: bool = False,
) -> np.ndarray:
    """LearnParams' estimate of A (K x K; A[i, j]: how much training on j lowers i's loss).

    `losses_after[s]`: the eval losses after probe `order[s]`; probe s's drop is measured from the eval
    before it (`loss_0` for the first)."""
    loss_0 = np.asarray(loss_0, dtype=np.float64)
    losses_after = np.asarray(losses_after, dtype=np.float64)
    k = len(loss_0)
    if losses_after.shape != (len(order), k):
        raise ValueError(f"losses_after must be ({len(order)}, {k}), got {losses_after.shape}")
    graph = np.zeros((k, k))
    previous = loss_0
    for j, after in zip(order, losses_after):
        graph[:, j] += previous - after
        previous = after
    graph /= lp_rounds
    if one_hot_factor == 1.0 or k == 1:
        return graph
    if diagonal:
        return np.diag(np.diag(graph) / one_hot_factor)
    w = probe_matrix(k, one_hot_factor)
    return np.linalg.solve(w, graph.T).T  # row i: the a_i with W a_i = graph[i]


def normalize_params(a: np.ndarray) -> np.ndarray:
    """Shift by the minimum entry when it is negative, then divide by the sum."""
    a = np.asarray(a, dtype=np.float64).copy()
    low = a.min()
    if low < 0:
        a -= low
    return a / a.sum()


class AioliRule:
    """Aioli's rounds as a state machine over segments of `lp_steps` steps.

    Call `advance(losses)` at every segment boundary (the first one at the start of the dynamic stage); it
    returns the proportions for the next segment. `wants_losses` says whether this call needs the current
    per-domain eval losses (round start and after each probe) or ignores them (exploit segments)."""

    def __init__(self, k: int, config: AioliConfig | None = None, prior: np.ndarray | None = None) -> None:
        self.cfg = c = config or AioliConfig()
        self.k = int(k)
        probe_segments = c.lp_rounds * self.k
        if c.round_steps % c.lp_steps:
            raise ValueError(f"round_steps={c.round_steps} must be a multiple of lp_steps={c.lp_steps}.")
        if c.round_steps // c.lp_steps <= probe_segments:
            raise ValueError(
                f"round_steps={c.round_steps} leaves no step to train on the learned mixture: the probes "
                f"take "
                f"lp_rounds x K x lp_steps = {c.lp_rounds} x {self.k} x {c.lp_steps} = "
                f"{probe_segments * c.lp_steps} steps. Raise round_steps or lower lp_rounds/lp_steps."
            )
        if not 0.0 < c.one_hot_factor <= 1.0 or (self.k > 1 and c.one_hot_factor <= 1.0 / self.k):
            raise ValueError(
                f"one_hot_factor={c.one_hot_factor} must be in (1/K, 1] = ({1 / self.k:.3g}, 1] so that each "
                "probe favours its domain (and the probe matrix is invertible)."
            )
        self.probe_segments = probe_segments
        self.round_segments = c.round_steps // c.lp_steps
        self.prior = None if prior is None else np.asarray(prior, dtype=np.float64)
        self.segment = 0
        """Segment index within the current round (0 = the round starts now)."""
        self.round = 0
        self.order = probe_order(self.k, c.lp_rounds, c.seed, 0)
        self.loss_0: np.ndarray | None = None
        self.losses_after: list[np.ndarray] = []
        self.weights = self.prior.copy() if self.prior is not None and c.start_from_prior else np.ones(self.k)
        self.smoothed: np.ndarray | None = None
        self.last_params: np.ndarray | None = None
        """The (normalised) A of the last round, for logging."""

    @property
    def wants_losses(self) -> bool:
        return self.segment <= self.probe_segments

    @property
    def proportions(self) -> np.ndarray:
        return self.weights / self.weights.sum()

    def advance(self, losses: np.ndarray | None) -> np.ndarray:
        c, s = self.cfg, self.segment
        if s <= self.probe_segments:
            if losses is None:
                raise ValueError(f"Aioli needs the eval losses at segment {s} of round {self.round}.")
            losses = np.asarray(losses, dtype=np.float64)
            if s == 0:
                self.loss_0 = losses
            else:
                self.losses_after.append(losses)
        if s < self.probe_segments:
            out = probe_mixture(self.k, int(self.order[s]), c.one_hot_factor)
        else:
            if s == self.probe_segments:
                self._update()
            out = self.proportions
        self.segment += 1
        if self.segment == self.round_segments:
            self.segment, self.round = 0, self.round + 1
            self.order = probe_order(self.k, c.lp_rounds, c.seed, self.round)
            self.losses_after = []
        return out

    def _update(self) -> None:
        c = self.cfg
        assert self.loss_0 is not None
        a = estimate_params(
            self.loss_0, self.order, np.stack(self.losses_after), c.lp_rounds, c.one_hot_factor, c.diagonal
        )
        if c.normalize:
            a = normalize_params(a)
        self.last_params = a
        if c.ema is not None:
            self.smoothed = a if self.smoothed is None else (1 - c.ema) * a + c.ema * self.smoothed
            base = self.prior if (self.prior is not None and c.start_from_prior) else np.ones(self.k)
            self.weights = base * np.exp(c.eta * self.smoothed.sum(axis=0))
        else:
            self.weights = self.weights * np.exp(c.eta * a.sum(axis=0))
        self.weights = self.weights / self.weights.sum()  # same proportions; keeps the numbers bounded

    # ---- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "round": self.round,
            "loss_0": None if self.loss_0 is None else self.loss_0.tolist(),
            "losses_after": [x.tolist() for x in self.losses_after],
            "weights": self.weights.tolist(),
            "smoothed": None if self.smoothed is None else self.smoothed.tolist(),
            "last_params": None if self.last_params is None else self.last_params.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.segment, self.round = int(state["segment"]), int(state["round"])
        self.order = probe_order(self.k, self.cfg.lp_rounds, self.cfg.seed, self.round)
        self.loss_0 = None if state["loss_0"] is None else np.asarray(state["loss_0"])
        self.losses_after = [np.asarray(x) for x in state["losses_after"]]
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.smoothed = None if state["smoothed"] is None else np.asarray(state["smoothed"])
        self.last_params = None if state["last_params"] is None else np.asarray(state["last_params"])
