"""The reorder sampler: every item once per epoch in the score order; consume-once re-ordering; state."""

from __future__ import annotations

import numpy as np
import pytest

from dataflex.train.reorder.patterns import ReorderSpec, reorder
from dataflex.train.reorder.sampler import ReorderSampler

SCORES = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])  # ascending: 1 5 3 0 4 2


def test_static_scores_order_every_epoch():
    sampler = ReorderSampler(6, ReorderSpec(pattern="sorting"), static_scores=SCORES)
    assert sampler.next(4).tolist() == [1, 5, 3, 0]
    assert sampler.next(4).tolist() == [4, 2, 1, 5]  # straddles: epoch 1 starts over in the same order
    assert sampler.epoch == 1 and sampler.pos == 2


def test_epochs_use_seed_plus_epoch_for_random_parts():
    spec = ReorderSpec(pattern="shuffle", seed=5)
    sampler = ReorderSampler(6, spec, static_scores=SCORES)
    first, second = sampler.next(6).tolist(), sampler.next(6).tolist()
    assert first == reorder(SCORES, spec).tolist()
    assert second == reorder(SCORES, ReorderSpec(pattern="shuffle", seed=6)).tolist()


def test_dynamic_rest_is_reordered_consume_once():
    sampler = ReorderSampler(6, ReorderSpec(pattern="sorting"))
    assert sampler.needs_epoch_scores(1)
    sampler.set_epoch_scores(SCORES)
    assert sampler.next(2).tolist() == [1, 5]
    assert sampler.rest().tolist() == [3, 0, 4, 2]
    # new scores for the rest (3, 0, 4, 2) -> 0.9, 0.1, 0.5, 0.0: ascending 2 0 4 3
    sampler.reorder_rest(np.array([0.9, 0.1, 0.5, 0.0]))
    assert sampler.next(2).tolist() == [2, 0]
    assert sampler.needs_epoch_scores(3)  # 2 left, 3 asked: the next epoch needs its scores first
    assert not sampler.needs_epoch_scores(2)
    sampler.set_epoch_scores(-SCORES)  # next epoch: high first under ascending sort of -score
    assert sampler.next(3).tolist() == [4, 3, 2]
    assert sampler.epoch == 1 and sampler.rest().tolist() == [4, 0, 3, 5, 1]


def test_dynamic_without_scores_refuses_to_draw():
    with pytest.raises(RuntimeError, match="no scores"):
        ReorderSampler(3, ReorderSpec()).next(1)


def test_state_roundtrip_mid_epoch():
    a = ReorderSampler(6, ReorderSpec(pattern="folding", layers=2, window=2, seed=3))
    a.set_epoch_scores(SCORES)
    a.next(3)
    a.reorder_rest(np.array([0.3, 0.2, 0.1]))
    b = ReorderSampler(6, ReorderSpec(pattern="folding", layers=2, window=2, seed=3))
    b.load_state_dict(a.state_dict())
    a.set_epoch_scores(SCORES)
    b.set_epoch_scores(SCORES)
    assert a.next(9).tolist() == b.next(9).tolist()
    with pytest.raises(ValueError, match="dataset changed"):
        ReorderSampler(5, ReorderSpec()).load_state_dict(a.state_dict())
