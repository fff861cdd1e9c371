"""Joint-update-aware reweighting (DataFlex PR #58, `joint_update_aware`): the pure solver.

A sample's value depends on what the rest of the weighted batch already covers. Over the global batch, with
L2-normalised sample embeddings Z (one row per sample) and a target direction u (the normalised mean embedding
of the eval / anchor set), the weights solve

    max_w  s^T w - (beta / 2) w^T S w + tau * H(w)   on the simplex,   s = Z u,  S = Z Z^T,

S (the cosine Gram matrix) standing in for the gradient-interaction matrix. For tau > 0 the optimum is interior
and unique (S is positive semi-definite, H strictly concave) and satisfies w = softmax((s - beta S w) / tau);
it is found by the damped fixed-point iteration w <- (1 - rho) w + rho softmax((s - beta S w) / tau) from the
uniform w, `iters` times. Modes (ablations in PR #58): `full` (above), `align_only` (s only: softmax(s / tau)),
`diverse_only` (-beta S w only), `uniform` (1/N). The loss is sum_i w_i loss_i, so uniform w gives the mean.

Deviations from PR #58 (read, not copied): none in the math; u is the mean of the eval embeddings *before*
normalisation, then normalised (as there); the iteration count, damping and tau are validated here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MODES = ("full", "align_only", "diverse_only", "uniform")


@dataclass(frozen=True)
class JointUpdateAwareSettings:
    beta: float = 0.1
    """Strength of the redundancy penalty (beta / 2) w^T S w (PR #58's default)."""
    tau: float = 0.05
    """Entropy temperature, > 0: smaller gives sharper weights (PR #58's default)."""
    iters: int = 5
    """Damped fixed-point iterations (PR #58's `fixed_point_iters`)."""
    damping: float = 1.0
    """rho in (0, 1]: step of each iteration; 1.0 = plain fixed-point iteration."""
    mode: str = "full"
    """full | align_only | diverse_only | uniform (PR #58's `objective_mode`)."""
    normalize: bool = True
    """L2-normalise embeddings and the target (S is then the cosine Gram matrix)."""

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"joint_update_aware: tau must be > 0 (the entropy term), got {self.tau}")
        if not 0.0 < self.damping <= 1.0:
            raise ValueError(f"joint_update_aware: damping must be in (0, 1], got {self.damping}")
        if self.iters < 1:
            raise ValueError(f"joint_update_aware: iters must be >= 1, got {self.iters}")
        if self.mode not in MODES:
            raise ValueError(f"joint_update_aware: mode must be one of {', '.join(MODES)}, got {self.mode!r}")


def objective(w: torch.Tensor, s: torch.Tensor, gram: torch.Tensor, beta: float, tau: float) -> torch.Tensor:
    """s^T w - (beta / 2) w^T S w + tau * H(w), H(w) = -sum_i w_i log w_i (0 log 0 = 0)."""
    entropy = -(w * torch.log(w.clamp_min(1e-30))).sum()
    return s @ w - 0.5 * beta * (w @ gram @ w) + tau * entropy


def solve_weights(s: torch.Tensor, gram: torch.Tensor, settings: JointUpdateAwareSettings) -> torch.Tensor:
    """The damped fixed-point iteration from the uniform w; returns weights on the simplex (sum 1)."""
    n = s.numel()
    w = torch.full_like(s, 1.0 / max(n, 1))
    if n == 0 or settings.mode == "uniform":
        return w
    for _ in range(settings.iters):
        if settings.mode == "align_only":
            score = s
        elif settings.mode == "diverse_only":
            score = -settings.beta * (gram @ w)
        else:
            score = s - settings.beta * (gram @ w)
        w = (1.0 - settings.damping) * w + settings.damping * torch.softmax(score / settings.tau, dim=0)
    return w


def joint_update_aware_weights(
    embeddings: torch.Tensor, target: torch.Tensor, settings: JointUpdateAwareSettings
) -> torch.Tensor:
    """Weights of the global batch from its embeddings (N, D) and the target mean embedding (D,)."""
    z = embeddings.detach().double()
    u = target.detach().double().reshape(-1)
    if settings.normalize:
        z = F.normalize(z, p=2, dim=-1, eps=1e-12)
        u = F.normalize(u, p=2, dim=0, eps=1e-12)
    return solve_weights(z @ u, z @ z.T, settings).to(embeddings.dtype)
