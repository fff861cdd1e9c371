"""Per-step batch selection rules: given signals of B candidates, keep b. Pure functions on tensors (no model,
no randomness except the seeded `uniform`), so every rank given the same numbers decides the same ids and a
test can check each rule on hand numbers. Ties go to the lower candidate index (stable), never to chance.

- `greats_greedy` (GREATS, Wang et al. NeurIPS 2024): greedy maximisation of the Taylor-approximated drop of
  the validation loss after one SGD step on the chosen set. The marginal gain of candidate i given the chosen
  set S is

      lr * <g_i, g_val> - lr^2 * sum_{j in S} <g_i, g_j>      (- lr^2 / 2 * ||g_i||^2 with self_interaction)

  As the authors' code (Jiachen-T-Wang/GREATS, less/train/utils_ghost_dot_prod.py `greedy_selection`, called
  from gctrainer.py with lr and lr^2): the Hessian of the second-order term is the identity, the validation
  gradient is the mean over the validation samples, and the self term of a candidate's own second-order
  contribution is left out by default (`self_interaction=False`); it is a knob because the expansion of
  one SGD step on S does contain it. The authors' per-sample gradients are those of the batch-mean loss (all
  scaled by 1/(B + n_val)); that scales both terms alike and changes no decision.
- `rho_loss_scores` (RHO-LOSS, Mindermann et al. ICML 2022): reducible holdout loss = training loss minus a
  reference model's loss on the same sample; the b largest are kept.
- `top_b` over the training loss (MaxLoss) or the per-sample gradient norm (GradNorm, the Gram diagonal).
- `uniform_choice`: b of B uniformly at random from a generator seeded by (seed, step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Choice:
    """Which candidates (positions 0..B-1, in the order chosen) and the score each had when it was chosen."""

    indices: list[int]
    scores: list[float]


def _check(b: int, n: int) -> None:
    if not 0 < b <= n:
        raise ValueError(f"per-step selection keeps b of B candidates and needs 0 < b <= B, got b={b}, B={n}")


def top_b(scores: torch.Tensor, b: int) -> Choice:
    """The b largest scores, largest first; ties by lower index; NaN counts as the lowest score."""
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    _check(b, len(scores))
    clean = torch.nan_to_num(scores, nan=-float("inf"))
    order = torch.sort(-clean, stable=True).indices[:b].tolist()
    return Choice(order, [float(scores[i]) for i in order])


def rho_loss_scores(train_loss: torch.Tensor, reference_loss: torch.Tensor) -> torch.Tensor:
    """(B,) reducible holdout loss: the training model's loss minus the reference model's on each sample."""
    train_loss, reference_loss = (
        torch.as_tensor(x, dtype=torch.float64) for x in (train_loss, reference_loss)
    )
    if train_loss.shape != reference_loss.shape:
        raise ValueError(
            f"rho_loss: {tuple(train_loss.shape)} training losses but {tuple(reference_loss.shape)} "
            "reference losses"
        )
    return train_loss - reference_loss


def greats_greedy(
    val_dots: torch.Tensor, gram: torch.Tensor, b: int, lr: float, *, self_interaction: bool = False
) -> Choice:
    """GREATS' greedy choice of b candidates (see the module docstring): `val_dots` (B,) = <g_i, g_val>,
    `gram` (B, B) = <g_i, g_j>, `lr` the learning rate of the step about to be taken."""
    v = torch.as_tensor(val_dots, dtype=torch.float64).reshape(-1)
    g = torch.as_tensor(gram, dtype=torch.float64)
    n = len(v)
    _check(b, n)
    if g.shape != (n, n):
        raise ValueError(f"greats: the Gram matrix is {tuple(g.shape)}, expected ({n}, {n})")
    if not lr > 0:
        raise ValueError(f"greats needs the step's learning rate > 0, got {lr}")
    gain = lr * v
    if self_interaction:
        gain = gain - 0.5 * lr * lr * torch.diagonal(g)
    gain = torch.nan_to_num(gain, nan=-float("inf"))
    taken = torch.zeros(n, dtype=torch.bool)
    indices: list[int] = []
    scores: list[float] = []
    for _ in range(b):
        masked = gain.masked_fill(taken, -float("inf"))
        best = int(torch.sort(-masked, stable=True).indices[0])  # first maximum: ties by lower index
        indices.append(best)
        scores.append(float(gain[best]))
        taken[best] = True
        gain = gain - lr * lr * g[best]
    return Choice(indices, scores)


def uniform_choice(n: int, b: int, *, seed: int, step: int) -> Choice:
    """b of n candidates uniformly at random, from a generator seeded by (seed, step) only: the same on every
    rank and after a resume."""
    _check(b, n)
    rng = np.random.default_rng([int(seed), int(step), 0x5E1EC7])
    order = rng.permutation(n)[:b].tolist()
    return Choice([int(i) for i in order], [0.0] * b)
