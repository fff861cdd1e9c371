"""`component=less`: LESS (Xia et al. 2024, "LESS: Selecting Influential Data for Targeted Instruction
Tuning"), computed online at each update with the live model and optimizer.

- Training features: per-sample gradients of the token-mean loss, Adam-preconditioned with the live
  optimizer's moments (`gradient_type=adam`; `sgd` for plain gradients), randomly projected, L2-normalised.
- Target features: plain (SGD) gradients of the target examples, same projection, L2-normalised.
- Score of a candidate: for each target subtask (domain), the mean cosine with its examples; then the
  maximum over subtasks. The `num_samples` best candidates are selected.

Deviations from the paper, on purpose: one checkpoint (the current model) instead of a learning-rate-
weighted sum over warmup checkpoints, because the selection happens during training; the projection
defaults to a sparse sign sketch (`proj_type=sparse`, see signals/projection.py) because TRAK's dense
projection is only affordable with its CUDA kernel (`proj_type=rademacher` gives the dense one);
`proj_dim` defaults to 2048 where the official scripts use 8192 (4x less feature memory and projection
cost on CPU; set 8192 to match); Adam features follow the paper's formula (`adam_variant=paper`:
bias-corrected, the live optimizer's betas/eps) where the official code uses fixed betas, eps inside the
square root and no bias correction (`adam_variant=code` reproduces it exactly). Before the optimizer's first
step Adam features are ~sign gradients: a warning says so. The selected subset is trained in a seeded
shuffled order (trainer.selection_order), as LESS's own training script does, not in score order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dataflex.config.component.select import LessSelectorConfig
from dataflex.core.registry import register_selector
from dataflex.train.selector.base_selector import top_k
from dataflex.train.selector.scoring import group_mean_max
from dataflex.train.selector.targeted import GradientSelector


def less_scores(
    train_features: torch.Tensor, target_features: torch.Tensor, groups: np.ndarray
) -> torch.Tensor:
    """(N,) LESS scores from L2-normalised (N, k) training and (M, k) target features and the subtask of
    each target row: max over subtasks of the mean cosine."""
    return group_mean_max(train_features.float() @ target_features.float().T, groups)


@register_selector("less")
class LessSelector(GradientSelector):
    selector_name = "less"
    Config = LessSelectorConfig

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        cands = self.candidate_ids(kwargs)
        if num_samples > len(cands):
            raise ValueError(
                f"less: {num_samples} samples requested from {len(cands)} candidates (top-k without "
                "replacement); enlarge trainer.candidate_pool_size or lower trainer.update_step."
            )
        val = self.target_features(model)
        train = self.train_features(model, cands, kwargs.get("optimizer"))
        scores = less_scores(train, val, self.target.groups).numpy()
        pos = top_k(scores, num_samples, self.rng(step_id))
        self.last_scores = scores[pos]
        self.last_info = {"candidate_score_mean": float(scores.mean()), "targets": len(self.target.ids)}
        return [int(i) for i in cands[pos]]
