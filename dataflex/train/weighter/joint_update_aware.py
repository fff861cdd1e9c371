"""Joint-update-aware reweighting (DataFlex PR #58, `joint_update_aware`): the pure solver.

A sample's value depends on what the rest of the weighted batch already covers. Over the global batch, with
L2-normalised sample embeddings Z (one row per sample) and a target direction u (the normalised mean embedding
of the eval / anchor set), the weights solve

    max_w  s^T w - (beta / 2) w^T S w + tau * H(w)   on the simplex,   s = Z u,  S = Z Z^T,

S (the cosine Gram matrix) standing in for the gradient-interaction matrix. For tau > 0 the optimum is
interior and unique (S is positive semi-definite, H strictly concave) and satisfies w = softmax((s - beta S w)
/ tau); it is found by the damped fixed-point iteration w <- (1 - rho) w + rho softmax((s - beta S w) / tau)
from the uniform w, `iters` times. Modes (ablations in PR #58): `full` (above), `align_only` (s only:
softmax(s / tau)), `diverse_only` (-beta S w only), `uniform` (1/N). The loss is sum_i w_i loss_i, so uniform
w gives the mean.

Deviations from PR #58 (read, not copied): none in the math; u is the mean of the eval embeddings *before*
normalisation, then normalised (as there); the iteration count, damping and tau are validated by
the schema (dataflex/config/component/weight.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dataflex.config.component.weight import JointUpdateAwareWeighterConfig
from dataflex.core.registry import register_weighter
from dataflex.train.distributed import all_gather_cat, broadcast_object
from dataflex.train.signals.embeddings import sample_embeddings
from dataflex.train.weighter.base_weighter import Weighter


def objective(w: torch.Tensor, s: torch.Tensor, gram: torch.Tensor, beta: float, tau: float) -> torch.Tensor:
    """s^T w - (beta / 2) w^T S w + tau * H(w), H(w) = -sum_i w_i log w_i (0 log 0 = 0)."""
    entropy = -(w * torch.log(w.clamp_min(1e-30))).sum()
    return s @ w - 0.5 * beta * (w @ gram @ w) + tau * entropy


def solve_weights(
    s: torch.Tensor, gram: torch.Tensor, settings: JointUpdateAwareWeighterConfig
) -> torch.Tensor:
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
    embeddings: torch.Tensor, target: torch.Tensor, settings: JointUpdateAwareWeighterConfig
) -> torch.Tensor:
    """Weights of the global batch from its embeddings (N, D) and the target mean embedding (D,)."""
    z = embeddings.detach().double()
    u = target.detach().double().reshape(-1)
    if settings.normalize:
        z = F.normalize(z, p=2, dim=-1, eps=1e-12)
        u = F.normalize(u, p=2, dim=0, eps=1e-12)
    return solve_weights(z @ u, z @ z.T, settings).to(embeddings.dtype)


# ---- the weighter (component=joint_update_aware under trainer=dynamic_weight) ------------------------------


@register_weighter("joint_update_aware")
class JointUpdateAwareWeighter(Weighter):
    """Weights the global batch by `joint_update_aware_weights`: embeddings of the batch's samples under the
    current model (each rank embeds its own, all-gathered), target u = the mean embedding of up to
    `max_targets` eval rows, recomputed every `target_refresh` steps on rank 0 and broadcast, so every rank
    solves the same problem. Loss: sum_i w_i loss_i (w on the simplex; uniform w is the plain mean).

    Deviations from PR #58: embeddings are the framework's `sample_embeddings` (mean-pooled last hidden
    state, eval mode, a separate forward; PR #58 defaults to the last token's hidden state); u averages up to
    `max_targets` eval rows (PR #58 one batch of `target_batch_size`, 1 by default, which its follow-up #59
    calls a bug); without eval data the batch's own mean embedding is the target, as there."""

    Config = JointUpdateAwareWeighterConfig

    def __init__(self, config: JointUpdateAwareWeighterConfig | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = c = config or JointUpdateAwareWeighterConfig()
        self.target_rows: np.ndarray | None = None
        if self.eval_data is not None and len(self.eval_data):
            rows = np.arange(len(self.eval_data))
            if c.max_targets is not None and len(rows) > c.max_targets:
                rows = np.sort(
                    np.random.default_rng(self.seed).choice(rows, size=c.max_targets, replace=False)
                )
            self.target_rows = rows
        self.target: torch.Tensor | None = None
        self.refreshed_at: int | None = None
        self.last_weights: torch.Tensor | None = None

    def _refresh(self, model: Any, step: int) -> None:
        target = None
        rank = self.accelerator.process_index if self.accelerator is not None else 0
        if rank == 0 and self.target_rows is not None:
            target = sample_embeddings(
                model,
                self.eval_data,
                self.target_rows.tolist(),
                batch_size=self.config.embed_batch_size,
                pad_token_id=self.pad_token_id,  # type: ignore[arg-type]
                device=self.device,
                normalize=False,
                pooling=self.config.pooling,
            ).mean(dim=0)
        self.target = broadcast_object(target)
        self.refreshed_at = step

    def get_weighted_loss(
        self, losses: torch.Tensor, *, ctx: Any = None, model: Any = None, inputs: Any = None
    ) -> torch.Tensor:
        if self.refreshed_at is None or ctx.global_step - self.refreshed_at >= self.config.target_refresh:
            self._refresh(model, ctx.global_step)
        local = sample_embeddings(
            model,
            self.train_data,
            ctx.sample_ids[ctx.local_slice].tolist(),
            batch_size=self.config.embed_batch_size,
            pad_token_id=self.pad_token_id,  # type: ignore[arg-type]
            device=self.device,
            normalize=False,
            pooling=self.config.pooling,
        )
        embeddings = all_gather_cat(local.to(self.device)).cpu()
        target = self.target if self.target is not None else embeddings.mean(dim=0)
        weights = joint_update_aware_weights(embeddings, target, self.config)
        self.last_weights = weights
        return (weights.to(losses.dtype) * losses).sum()

    def metrics(self) -> dict[str, float]:
        if self.last_weights is None:
            return {}
        w = self.last_weights.double()
        return {"jua_max_weight": float(w.max()), "jua_entropy": float(-(w * w.clamp_min(1e-30).log()).sum())}

    def state_dict(self) -> dict[str, Any]:
        return {
            "target": None if self.target is None else self.target.clone(),
            "refreshed_at": self.refreshed_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target = None if state.get("target") is None else state["target"].clone()
        self.refreshed_at = state.get("refreshed_at")
