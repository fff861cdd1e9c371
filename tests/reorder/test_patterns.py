"""Each ordering pattern's permutation on hand-worked numbers (definitions: microsoft/data-efficacy).

The ten scores below sort (ascending) to positions S = [7, 1, 5, 3, 9, 0, 8, 4, 6, 2] (scores 0.0 ... 0.9);
every expected permutation is worked out from S by hand in the comment next to it.
"""

from __future__ import annotations

import numpy as np
import pytest

from dataflex.train.reorder.patterns import (
    ReorderSpec,
    fold,
    reorder,
    segment_order,
    sort_order,
    transition_order,
    window_shuffle,
    zigzag,
)

SCORES = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.0, 0.6, 0.4]
S = [7, 1, 5, 3, 9, 0, 8, 4, 6, 2]


def _order(pattern: str, **knobs) -> list[int]:
    return reorder(SCORES, ReorderSpec(pattern=pattern, **knobs)).tolist()


def _is_permutation(perm, n: int = 10) -> bool:
    return sorted(perm) == list(range(n))


def test_sorting_both_polarities_and_stable_ties():
    assert _order("sorting") == S
    assert _order("sorting", ascending=False) == S[::-1]
    # equal scores keep their original order in both directions (Python's stable sorted(reverse=True))
    assert sort_order([1, 0, 1, 0]).tolist() == [1, 3, 0, 2]
    assert sort_order([1, 0, 1, 0], ascending=False).tolist() == [0, 2, 1, 3]


def test_folding_three_layers():
    # pass 0: S[0], S[3], S[6], S[9] = 7 3 8 2; pass 1: S[1], S[4], S[7] = 1 9 4;
    # pass 2: S[2], S[5], S[8] = 5 0 6
    assert _order("folding", layers=3) == [7, 3, 8, 2, 1, 9, 4, 5, 0, 6]
    # high scores first: D = S reversed = 2 6 4 8 0 9 3 5 1 7; pass 0: 2 4 0 3 1; pass 1: 6 8 9 5 7
    assert _order("folding", layers=2, ascending=False) == [2, 4, 0, 3, 1, 6, 8, 9, 5, 7]
    assert _order("folding", layers=1) == S  # one pass is the sorted order


def test_zigzag_reverses_odd_passes():
    # folding's passes 7 3 8 2 | 1 9 4 | 5 0 6 with pass 1 reversed: 4 9 1
    assert _order("zigzag", layers=3) == [7, 3, 8, 2, 4, 9, 1, 5, 0, 6]
    # 4 passes: S[0::4] = 7 9 6 | S[1::4] = 1 0 2 reversed 2 0 1 | S[2::4] = 5 8 | S[3::4] = 3 4 reversed 4 3
    assert zigzag(np.array(S), 4).tolist() == [7, 9, 6] + [2, 0, 1] + [5, 8] + [4, 3]
    assert fold(np.array(S), 4).tolist() == [7, 9, 6] + [1, 0, 2] + [5, 8] + [3, 4]


def test_stair_folds_the_transition_region():
    # n=10, sections=2 -> split round(5) = 5; radius round(10 * 0.3) = 3 -> region ranks [2, 8) = 5 3 9 0 8 4
    # folded in 3 passes: 5 0 | 3 8 | 9 4; the ranks outside stay sorted: 7 1 ... 6 2
    assert _order("stair", sections=2, folding_ratio=0.3, layers=3) == [7, 1, 5, 0, 3, 8, 9, 4, 6, 2]
    # radius 2, 2 passes: region ranks [3, 7) = 3 9 0 8 -> 3 0 | 9 8
    assert _order("stair", sections=2, folding_ratio=0.2, layers=2) == [7, 1, 5, 3, 0, 9, 8, 4, 6, 2]


def test_saw_zigzags_each_transition_region():
    # sections=3 -> splits round(3.33) = 3, round(6.67) = 7; radius round(2.0) = 2
    # region 1: ranks [1, 5) = 1 5 3 9 -> pass 0: 1 3, pass 1: 5 9 reversed -> 1 3 9 5
    # region 2: ranks [5, 9) = 0 8 4 6 -> pass 0: 0 4, pass 1: 8 6 reversed -> 0 4 6 8
    assert _order("saw", sections=3, folding_ratio=0.2, layers=2) == [7, 1, 3, 9, 5, 0, 4, 6, 8, 2]


def test_transition_split_points_round_half_to_even():
    # sections=4: splits round(2.5) = 2, 5, round(7.5) = 8 (half to even; half-up would give 3 and 8)
    # radius 2: [0, 4) = 7 1 5 3 -> 7 5 | 1 3; [4, 7) = 9 0 8 -> 9 8 | 0; [7, 10) = 4 6 2 -> 4 2 | 6
    assert transition_order(np.array(S), 4, 0.2, 2, "folding").tolist() == [7, 5, 1, 3, 9, 8, 0, 4, 2, 6]


def test_stair_and_saw_without_transitions_are_sorted():
    assert _order("stair", sections=1, folding_ratio=0.3) == S
    assert _order("saw", sections=3, folding_ratio=0.0) == S


def test_segment_opposite_ends():
    # front: int(10 * 20 // 100) = 2 lowest = {7, 1}; back: 3 highest = {4, 6, 2}; middle: the other 5
    perm = _order("segment", x_pct=20, y_pct=30, front_is_high=False, back_is_high=True)
    assert _is_permutation(perm)
    assert set(perm[:2]) == {7, 1} and set(perm[2:7]) == {5, 3, 9, 0, 8} and set(perm[7:]) == {4, 6, 2}
    # reversed boundaries: front the 2 highest {6, 2}, back the 3 lowest {7, 1, 5}
    perm = _order("segment", x_pct=20, y_pct=30, front_is_high=True, back_is_high=False)
    assert set(perm[:2]) == {6, 2} and set(perm[7:]) == {7, 1, 5}


def test_segment_same_end_splits_that_end():
    # both high, 2 + 2: the 4 highest {8, 4, 6, 2} are split between front and back; middle the 6 lowest
    perm = _order("segment", x_pct=20, y_pct=20, front_is_high=True, back_is_high=True)
    assert set(perm[:2]) | set(perm[8:]) == {8, 4, 6, 2}
    assert set(perm[2:8]) == {7, 1, 5, 3, 9, 0}


def test_segment_overflow_is_scaled_down():
    # 70% + 50%: n_front 7, n_back 5 -> scaled by 10/12: front int(5.83) = 5 lowest, back the other 5
    with pytest.warns(RuntimeWarning, match="exceeds 100"):
        perm = segment_order(SCORES, 70, 50, front_is_high=False, back_is_high=True, seed=0).tolist()
    assert set(perm[:5]) == {7, 1, 5, 3, 9} and set(perm[5:]) == {0, 8, 4, 6, 2}


def test_segment_is_shuffled_inside_segments_by_the_seed():
    runs = {tuple(_order("segment", x_pct=0, y_pct=0, seed=s)) for s in range(5)}
    assert len(runs) > 1  # the middle (everything here) is shuffled, differently per seed
    assert _order("segment", x_pct=0, y_pct=0, seed=3) == _order("segment", x_pct=0, y_pct=0, seed=3)


def test_window_shuffle_keeps_blocks():
    perm = _order("sorting", window=3, seed=1)
    # every block of 3 holds the same items as the sorted order's block: {7,1,5} {3,9,0} {8,4,6} {2}
    assert [set(perm[i : i + 3]) for i in range(0, 10, 3)] == [{7, 1, 5}, {3, 9, 0}, {8, 4, 6}, {2}]
    assert {tuple(_order("sorting", window=10, seed=s)) for s in range(4)} != {tuple(S)}
    assert window_shuffle(np.array(S), 1, seed=0).tolist() == S  # window 0/1: off


def test_window_applies_after_folding():
    perm = _order("folding", layers=3, window=4, seed=7)
    assert [set(perm[i : i + 4]) for i in range(0, 10, 4)] == [{7, 3, 8, 2}, {1, 9, 4, 5}, {0, 6}]


def test_shuffle_is_a_seeded_permutation():
    a, b, c = _order("shuffle", seed=10), _order("shuffle", seed=10), _order("shuffle", seed=11)
    assert _is_permutation(a) and a == b and a != c


@pytest.mark.parametrize("pattern", ["shuffle", "sorting", "folding", "zigzag", "segment", "stair", "saw"])
def test_every_pattern_is_a_permutation_of_any_size(pattern):
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 7, 33):
        perm = reorder(rng.random(n), ReorderSpec(pattern=pattern, layers=4, sections=3, folding_ratio=0.2))
        assert sorted(perm.tolist()) == list(range(n))


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="pattern"):
        ReorderSpec(pattern="spiral")
    with pytest.raises(ValueError, match="layers"):
        ReorderSpec(layers=0)
    with pytest.raises(ValueError, match="folding_ratio"):
        ReorderSpec(folding_ratio=-0.1)
    with pytest.raises(ValueError, match="NaN"):
        reorder([0.1, float("nan")], ReorderSpec())
