"""InfoBatch (Qin et al., ICLR 2024; NUS-HPC-AI-Lab/InfoBatch): unbiased dynamic data pruning, the pure core.

Each sample keeps its most recent training loss (its score; a constant before it is first trained, so the
first epoch prunes nothing). At the start of each epoch:
- the "well learned" samples are those whose score is below the mean score;
- a uniformly random share keep_ratio = 1 - prune_ratio of them is kept (int(keep_ratio * count) samples),
  the rest are skipped this epoch;
- every kept well-learned sample's loss is multiplied by 1 / keep_ratio, so the expected gradient over the
  well-learned group equals the unpruned one (the rescaling that makes the pruning unbiased);
- the epoch's ids (all other samples + the kept ones) are shuffled.
Annealing: the first delta share of the epochs is pruned; epoch e (0-based) with e + 1 > delta * num_epochs
trains on everything with weight 1 (the official sampler counts epochs from 1: with 8 epochs and delta 0.875,
epochs 1-7 are pruned and the 8th is full).

Deviations from the official code (read, not copied): the random draws come from a generator seeded by
(seed, epoch) instead of the global `np.random.seed(epoch)`, so the plan is reproducible and identical on
every rank without touching global state; keep_ratio is clamped to [0.1, 1] as there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INITIAL_SCORE = 3.0
"""Score of a sample not trained yet (the official code's initial value); equal scores prune nothing."""


@dataclass(frozen=True)
class InfoBatchSettings:
    prune_ratio: float = 0.5
    """Share of the well-learned (below-mean loss) samples skipped each pruned epoch (paper: 0.5)."""
    num_epochs: int = 1
    """Epochs of the run (the annealing point is delta * num_epochs)."""
    delta: float = 0.875
    """Prune during the first delta share of the epochs, then train on everything (paper: 0.875)."""
    seed: int = 0
    """Seed of the pruning draws and the epoch shuffle."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ValueError(f"infobatch: prune_ratio must be in [0, 1), got {self.prune_ratio}")
        if not 0.0 <= self.delta <= 1.0:
            raise ValueError(f"infobatch: delta must be in [0, 1], got {self.delta}")
        if self.num_epochs < 1:
            raise ValueError(f"infobatch: num_epochs must be >= 1, got {self.num_epochs}")

    @property
    def keep_ratio(self) -> float:
        return min(1.0, max(0.1, 1.0 - self.prune_ratio))


def annealing(epoch: int, settings: InfoBatchSettings) -> bool:
    """True from the epoch on which pruning stops: 0-based `epoch` with epoch + 1 > delta * num_epochs."""
    return epoch + 1 > settings.delta * settings.num_epochs


def record_losses(scores: np.ndarray, ids: np.ndarray, losses: np.ndarray) -> None:
    """The step's gathered per-sample training losses become the ids' InfoBatch scores, in place
    (non-finite losses are skipped: the id keeps its previous score)."""
    ok = np.isfinite(losses)
    scores[np.asarray(ids, dtype=np.int64)[ok]] = np.asarray(losses, dtype=np.float64)[ok]


def annealing_by_steps(done: int, total_steps: int, delta: float) -> bool:
    """A step-based trainer's annealing (trainer=infobatch, the pipeline's prune stage): pruning stops once
    `done` >= delta x the run's steps (the number of pruned epochs a step budget holds is not known)."""
    return done >= delta * total_steps


def epoch_plan(
    scores: np.ndarray, epoch: int, settings: InfoBatchSettings, anneal: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ids trained in epoch `epoch` (shuffled) and the loss weight of every sample (len(scores)).
    `anneal`: whether this epoch is complete (None: `annealing(epoch, settings)`; a step-based trainer
    decides itself)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    rng = np.random.default_rng([settings.seed, epoch])
    weights = np.ones(n, dtype=np.float64)
    if (annealing(epoch, settings) if anneal is None else anneal) or n == 0:
        return rng.permutation(n).astype(np.int64), weights
    well = scores < scores.mean()
    well_ids = np.flatnonzero(well)
    kept = rng.choice(well_ids, int(settings.keep_ratio * len(well_ids)), replace=False)
    weights[kept] = 1.0 / settings.keep_ratio
    ids = np.concatenate([np.flatnonzero(~well), np.sort(kept)]).astype(np.int64)
    return rng.permutation(ids), weights


def rescaled_loss(losses: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> float:
    """The batch loss InfoBatch back-propagates: mean_i(weight[id_i] * loss_i)."""
    losses = np.asarray(losses, dtype=np.float64)
    return float((losses * weights[np.asarray(ids)]).mean()) if len(losses) else 0.0
