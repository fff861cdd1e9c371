"""InfoBatch's epoch plan (NUS-HPC-AI-Lab/InfoBatch) on hand-worked numbers.

Scores 1..6 have mean 3.5: samples 0, 1, 2 are "well learned". With prune_ratio 0.5, int(0.5 * 3) = 1 of them
is kept with loss weight 1 / 0.5 = 2; samples 3, 4, 5 are always trained with weight 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from dataflex.train.selector.infobatch import (
    INITIAL_SCORE,
    InfoBatchSettings,
    annealing,
    epoch_plan,
    rescaled_loss,
)

SCORES = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])


def test_prunes_below_mean_and_rescales_the_kept():
    ids, weights = epoch_plan(SCORES, 0, InfoBatchSettings(prune_ratio=0.5, num_epochs=8))
    kept_low = sorted(set(ids.tolist()) & {0, 1, 2})
    assert len(ids) == 4 and {3, 4, 5} <= set(ids.tolist()) and len(kept_low) == 1
    assert weights[kept_low[0]] == 2.0
    assert [weights[i] for i in range(6) if i != kept_low[0]] == [1.0] * 5


def test_rescaling_keeps_the_group_total():
    # 4 below-mean samples (scores 0, 0, 0, 0 vs mean 2.5), keep 0.5: 2 kept x weight 2 = the group's 4
    scores = np.array([0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0])
    for epoch in range(5):
        ids, weights = epoch_plan(scores, epoch, InfoBatchSettings(prune_ratio=0.5, num_epochs=10, seed=3))
        assert sum(weights[i] for i in ids if scores[i] == 0.0) == 4.0
    # the loss: mean of weight x loss over the trained batch
    assert rescaled_loss(np.array([1.0, 3.0]), np.array([0, 4]), np.array([2.0] + [1.0] * 7)) == 2.5


def test_equal_scores_prune_nothing():
    ids, weights = epoch_plan(np.full(5, INITIAL_SCORE), 0, InfoBatchSettings(prune_ratio=0.7))
    assert sorted(ids.tolist()) == [0, 1, 2, 3, 4] and weights.tolist() == [1.0] * 5


def test_anneals_in_the_last_epochs():
    settings = InfoBatchSettings(prune_ratio=0.5, num_epochs=8, delta=0.875)  # 7 pruned epochs, then full
    assert [annealing(e, settings) for e in range(8)] == [False] * 7 + [True]
    ids, weights = epoch_plan(SCORES, 7, settings)
    assert sorted(ids.tolist()) == list(range(6)) and weights.tolist() == [1.0] * 6


def test_plan_is_seeded_and_keep_ratio_clamped():
    s = InfoBatchSettings(prune_ratio=0.5, num_epochs=8, seed=1)
    assert [epoch_plan(SCORES, 2, s)[0].tolist() for _ in range(2)] == [
        epoch_plan(SCORES, 2, s)[0].tolist()
    ] * 2
    assert InfoBatchSettings(prune_ratio=0.95).keep_ratio == 0.1
    with pytest.raises(ValueError, match="prune_ratio"):
        InfoBatchSettings(prune_ratio=1.0)
