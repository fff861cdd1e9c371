"""Samplers: determinism, resumption, validation, and the one-sample proportion bound (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflex.data import EpochSampler, IndexListSampler, ProportionSampler, SamplerExhausted
from dataflex.data.sampling import ProportionScheduler


def _domains(sizes: list[int]) -> list[np.ndarray]:
    starts = np.cumsum([0] + sizes)
    return [np.arange(starts[d], starts[d + 1]) for d in range(len(sizes))]


# ----------------------------------------------------------------------------------------- epoch
def test_epoch_sampler_chains_permutations() -> None:
    s = EpochSampler(10, seed=3)
    out = s.next(25)
    assert sorted(out[:10].tolist()) == list(range(10)) and sorted(out[10:20].tolist()) == list(range(10))
    assert s.epoch == 2 and not np.array_equal(out[:10], out[10:20])
    assert np.array_equal(EpochSampler(10, seed=3).next(25), out)
    assert EpochSampler(5, seed=3, shuffle=False).next(7).tolist() == [0, 1, 2, 3, 4, 0, 1]


def test_epoch_sampler_resume_in_place() -> None:
    s = EpochSampler(7, seed=1)
    s.next(9)
    state = s.state_dict()
    rest = s.next(20)
    r = EpochSampler(7, seed=99)
    r.load_state_dict(state)
    assert np.array_equal(r.next(20), rest)
    with pytest.raises(ValueError, match="dataset changed"):
        EpochSampler(8).load_state_dict(state)
    with pytest.raises(ValueError, match="given to a 'proportion' sampler"):
        ProportionSampler(_domains([2]), [1.0]).load_state_dict(state)


# ------------------------------------------------------------------------------------ proportion
def test_proportion_sampler_draws_without_replacement_within_domain() -> None:
    rows = _domains([5, 20])
    s = ProportionSampler(rows, [0.5, 0.5], seed=0)
    out = s.next(20)
    dom0 = out[out < 5]
    assert len(dom0) == 10
    assert sorted(dom0[:5].tolist()) == list(range(5)) and sorted(dom0[5:].tolist()) == list(range(5))
    assert not np.array_equal(dom0[:5], dom0[5:])  # the second pass is a fresh permutation
    assert s.passes[0] == 2 and s.drawn.tolist() == [10, 10]


def test_proportion_sampler_deterministic_and_resumable() -> None:
    rows = _domains([7, 11, 3])
    a = ProportionSampler(rows, [0.2, 0.5, 0.3], seed=5)
    b = ProportionSampler(rows, [0.2, 0.5, 0.3], seed=5)
    assert np.array_equal(a.next(40), b.next(40))
    state = a.state_dict()
    rest = a.next(33)
    c = ProportionSampler(rows, [1.0, 0.0, 0.0], seed=0)
    c.load_state_dict(state)
    assert np.array_equal(c.next(33), rest)


def test_set_proportions_takes_effect_on_next_draw_and_restarts_counters() -> None:
    rows = _domains([50, 50])
    s = ProportionSampler(rows, [1.0, 0.0], seed=0)
    assert (s.next(7) < 50).all()
    s.set_proportions([0.25, 0.75])
    out = s.next(8)
    assert (out >= 50).sum() == 6  # exactly 3/4 of the 8 slots after the switch
    assert s.state_dict()["scheduler"] == {"t": 8, "counts": [2, 6]}
    first = np.concatenate([s.domain_rows[0][np.random.default_rng([0, 0, 0]).permutation(50)]])
    assert out[out < 50].tolist() == first[7:9].tolist()  # domain 0 continues its permutation


@pytest.mark.parametrize(
    "p, match",
    [
        ([0.5, 0.5, 0.0, 0.0], "got 4 proportions for 3 domains"),
        ([0.5, 0.7, -0.2], r"negative for domain\(s\) \['math'\]"),
        ([0.0, 0.0, 0.0], "all zero"),
        ([0.2, 0.2, 0.2], r"must sum to 1 \(got 0.6\): code=0.2, chat=0.2, math=0.2"),
        ([float("nan"), 0.5, 0.5], "finite"),
    ],
)
def test_set_proportions_validation(p: list[float], match: str) -> None:
    s = ProportionSampler(_domains([3, 3, 3]), [0.2, 0.3, 0.5], domain_names=["code", "chat", "math"])
    with pytest.raises(ValueError, match=match):
        s.set_proportions(p)


def test_positive_proportion_for_empty_domain_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\['b'\] have proportion > 0 but no rows"):
        ProportionSampler([np.arange(3), np.arange(0)], [0.5, 0.5], domain_names=["a", "b"])
    assert (ProportionSampler([np.arange(3), np.arange(0)], [1.0, 0.0]).next(5) < 3).all()


def test_megatron_greedy_would_break_the_bound_where_ours_holds() -> None:
    """Plain argmax-deficit (Megatron) exceeds one sample for these proportions; the scheduler does not."""
    p = np.array([40, 4, 10, 3, 17, 40]) / 114
    c, worst = np.zeros(len(p)), 0.0
    for t in range(1, 400):
        c[np.argmax(p * t - c)] += 1
        worst = max(worst, np.abs(c - p * t).max())
    assert worst > 1.0
    s, c = ProportionScheduler(p), np.zeros(len(p))
    for t in range(1, 400):
        c[s.next_domain()] += 1
        assert np.abs(c - p * t).max() <= 1.0 + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(0, 20), min_size=1, max_size=7).filter(lambda w: sum(w) > 0),
    batches=st.lists(st.integers(1, 37), min_size=1, max_size=12),
    switch=st.one_of(st.none(), st.lists(st.integers(0, 20), min_size=7, max_size=7)),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_prefix_within_one_sample_of_target(
    weights: list[int], batches: list[int], switch: list[int] | None, seed: int
) -> None:
    """For random proportions and batch sizes, every prefix of the global stream (also across a
    set_proportions switch, measured from the switch) is within one sample per domain of its target."""
    k = len(weights)
    rows = _domains([3 + 2 * d for d in range(k)])
    domain_of = np.concatenate([np.full(len(r), d) for d, r in enumerate(rows)])
    p = np.array(weights, dtype=float) / sum(weights)
    sampler = ProportionSampler(rows, p, seed=seed)
    plans = [p]
    if switch is not None and sum(switch[:k]) > 0:
        plans.append(np.array(switch[:k], dtype=float) / sum(switch[:k]))
    for plan_no, plan in enumerate(plans):
        if plan_no:
            sampler.set_proportions(plan)
        stream = np.concatenate([sampler.next(b) for b in batches])
        counts = np.cumsum(np.eye(k, dtype=int)[domain_of[stream]], axis=0)
        targets = np.outer(np.arange(1, len(stream) + 1), plan)
        assert np.abs(counts - targets).max() <= 1.0 + 1e-9
        assert (counts[:, plan == 0] == 0).all()


# ------------------------------------------------------------------------------------ index list
def test_index_list_sampler_exact_then_exhausted() -> None:
    s = IndexListSampler(np.array([9, 3, 3, 7]))
    assert s.next(3).tolist() == [9, 3, 3] and s.remaining == 1
    with pytest.raises(SamplerExhausted, match="only 1 of 4 remain"):
        s.next(2)
    assert s.next(1).tolist() == [7] and s.remaining == 0
    c = IndexListSampler([1, 2, 3], cycle=True)
    assert c.next(7).tolist() == [1, 2, 3, 1, 2, 3, 1]
    state = c.state_dict()
    d = IndexListSampler([0])
    d.load_state_dict(state)
    assert d.next(2).tolist() == [2, 3]
