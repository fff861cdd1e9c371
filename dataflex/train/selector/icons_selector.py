"""`component=icons`: ICONS (Wu et al. 2025, "ICONS: Influence Consensus for Vision-Language Data Selection",
arXiv 2501.00654), computed online with the live model and optimizer on our batched LESS features.

Two stages, as the paper and the authors' code (princetonvisualai/icons, `icons/generalist.py`):
1. Specialist: for each of the K target tasks (the comma-separated `target_domain`s, or the domains of
   `target_dataset`), the influence of candidate i on task t is the mean over the task's validation rows of
   <train feature_i, validation feature_j> (L2-normalised LESS features: Adam-preconditioned training
   gradients, plain validation gradients, one shared random projection) -> an (N, K) influence matrix.
2. Generalist (influence consensus): task t votes for every candidate whose influence is at least the
   (1 - p) quantile of its column (`np.percentile` with linear interpolation, as the code), p =
   `vote_fraction`; a candidate's consensus score is its number of votes; the `num_samples` candidates with
   the most votes are selected.

Deviations from the authors, on purpose:
- Online: the current model at each update instead of one offline warmup checkpoint (as our LESS).
- p: the code uses one `top_percent` for both the vote and the selected share; `vote_fraction=null`
  (default) does the same (p = num_samples / candidates); a number decouples them.
- Ties in the vote count: the code takes `np.argsort(votes)[-k:]`, whose order among equal counts is the
  sort's internal one (arbitrary). We break ties explicitly: `tie_break=random` (seeded; the same on every
  rank and on resume) or `mean_rank` (higher mean within-task percentile rank first, then seeded random).
- Tasks are flat: the code takes the max over MME's subtasks before voting (one MME vote); here each target
  domain is one task with one vote (list only the domains you want to vote).
- The projection defaults to our sparse sketch and `proj_dim=2048` (the code: TRAK, 5120), see LESS.
- Vision: ICONS was built for LLaVA; we apply the same selection rule to text models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dataflex.config.component.select import TIE_BREAKS, IconsSelectorConfig
from dataflex.core.registry import register_selector
from dataflex.train.selector.scoring import group_means
from dataflex.train.selector.targeted import GradientSelector
from dataflex.utils.logging import logger


def task_influence(
    train_features: torch.Tensor, target_features: torch.Tensor, groups: np.ndarray
) -> np.ndarray:
    """(N, K) specialist influences: per task (group of target rows), the mean inner product of each
    training feature with the task's validation features."""
    sims = train_features.double() @ target_features.double().T
    return group_means(sims, groups).numpy()


def consensus_votes(influence: np.ndarray, vote_fraction: float) -> np.ndarray:
    """(N,) votes: how many tasks (columns) have the candidate at or above their (1 - p) quantile."""
    influence = np.asarray(influence, dtype=np.float64)
    if not 0 < vote_fraction <= 1:
        raise ValueError(f"component.vote_fraction must be in (0, 1], got {vote_fraction}.")
    thresholds = np.percentile(influence, 100.0 * (1.0 - vote_fraction), axis=0)
    return (influence >= thresholds[None, :]).sum(axis=1)


def mean_percentile_rank(influence: np.ndarray) -> np.ndarray:
    """(N,) mean over tasks of each candidate's rank within the task, scaled to [0, 1] (1 = the best)."""
    n = influence.shape[0]
    ranks = np.argsort(np.argsort(influence, axis=0, kind="stable"), axis=0, kind="stable")
    return ranks.mean(axis=1) / max(n - 1, 1)


def consensus_select(
    influence: np.ndarray,
    k: int,
    vote_fraction: float,
    rng: np.random.Generator,
    tie_break: str = "random",
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the `k` candidates with the most votes (ties as `tie_break` says), and all votes."""
    influence = np.asarray(influence, dtype=np.float64)
    if influence.ndim != 2 or influence.shape[1] == 0:
        raise ValueError(f"icons needs an (N, K>=1) influence matrix, got shape {influence.shape}.")
    if k > len(influence):
        raise ValueError(f"icons: cannot select {k} of {len(influence)} candidates.")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"component.tie_break must be one of {TIE_BREAKS}, got {tie_break!r}.")
    votes = consensus_votes(influence, vote_fraction)
    keys = [rng.permutation(len(votes))]  # the last resort, seeded
    if tie_break == "mean_rank":
        keys.append(-mean_percentile_rank(influence))
    order = np.lexsort((*keys, -votes))
    return order[:k], votes


@register_selector("icons")
class IconsSelector(GradientSelector):
    """LESS features per task, then influence consensus (see the module docstring)."""

    selector_name = "icons"

    Config = IconsSelectorConfig
    _warned_one_task = False

    def select(self, model, step_id: int, num_samples: int, **kwargs: Any) -> list[int]:
        cands = self.candidate_ids(kwargs)
        if num_samples > len(cands):
            raise ValueError(
                f"icons: {num_samples} samples requested from {len(cands)} candidates (without "
                "replacement); enlarge trainer.candidate_pool_size or lower trainer.update_step."
            )
        target = self.target
        counts = np.bincount(target.groups, minlength=len(target.group_names))
        empty = [name for name, c in zip(target.group_names, counts) if c == 0]
        if empty:
            raise ValueError(f"icons: the target task(s) {empty} have no validation rows.")
        if len(target.group_names) == 1 and not self._warned_one_task:
            self._warned_one_task = True
            logger.warning(
                "icons with one target task is LESS's top-k with random ties: list several tasks in "
                "component.target_domain (comma-separated) for a consensus."
            )
        val = self.target_features(model)
        train = self.train_features(model, cands, kwargs.get("optimizer"))
        influence = task_influence(train, val, target.groups)
        p = self.config.vote_fraction if self.config.vote_fraction is not None else num_samples / len(cands)
        pos, votes = consensus_select(influence, num_samples, p, self.rng(step_id), self.config.tie_break)
        self.last_scores = votes[pos].astype(np.float64)
        self.last_info = {
            "vote_fraction": float(p),
            "tasks": ",".join(target.group_names),
            "votes_mean": float(votes.mean()),
            "selected_votes_min": int(votes[pos].min()) if len(pos) else 0,
            **{
                f"influence_mean/{name}": float(influence[:, t].mean())
                for t, name in enumerate(target.group_names)
            },
        }
        return [int(i) for i in cands[pos]]
