"""Each selector's rule on fixed numbers (values derived by hand in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dataflex.train.selector.base_selector import top_k, weighted_sample
from dataflex.train.selector.cluster_less_selector import kmeans
from dataflex.train.selector.delta_loss_selector import delta_loss_probs, window_position
from dataflex.train.selector.less_selector import less_scores
from dataflex.train.selector.loss_selector import loss_bucket_probs
from dataflex.train.selector.near_selector import round_robin_neighbours
from dataflex.train.selector.nice_selector import split_prompt, token_f1
from dataflex.train.selector.tsds_selector import (
    TsdsSelector,
    capped_neighbours,
    kernel_density,
    near_uniform_warning,
    nearest,
    scaled_sigma,
    tsds_memory_bytes,
    tsds_probabilities,
)

LOSSES = np.arange(1, 11) / 10.0  # 0.1 .. 1.0


def test_loss_buckets_on_fixed_numbers():
    # linear quantiles of 0.1..1.0: q(0.33) = 0.397, q(0.66) = 0.694 -> low {.1,.2,.3}, medium {.4,.5,.6},
    # high {.7,.8,.9,1.0}. focus=high, weight 5, T=1: weights 1,1,1,1,1,1,5,5,5,5 (sum 26).
    p = loss_bucket_probs(LOSSES, focus="high", focus_weight=5.0, quantiles=(0.33, 0.66), temperature=1.0)
    assert np.allclose(p, [1 / 26] * 6 + [5 / 26] * 4)
    # T=0.5 squares the weights: 1 x 6 + 25 x 4 = 106
    p = loss_bucket_probs(LOSSES, focus="high", focus_weight=5.0, quantiles=(0.33, 0.66), temperature=0.5)
    assert np.allclose(p, [1 / 106] * 6 + [25 / 106] * 4)
    # focus=medium: 3 x 5 in the middle, 7 x 1 elsewhere (sum 22)
    p = loss_bucket_probs(LOSSES, focus="medium", focus_weight=5.0, quantiles=(0.33, 0.66), temperature=1.0)
    assert np.allclose(p, [1 / 22] * 3 + [5 / 22] * 3 + [1 / 22] * 4)
    # a very large temperature is (almost) uniform; a NaN loss is never drawn
    p = loss_bucket_probs(
        np.append(LOSSES, np.nan), focus="low", focus_weight=5.0, quantiles=(0.33, 0.66), temperature=1e9
    )
    assert np.allclose(p[:10], 0.1) and p[10] == 0


def test_delta_loss_window_schedule_on_fixed_numbers():
    # update 2 of 4: x = 1/3, sigmoid(10 (x - .5)) = 1 / (1 + e^(5/3)) = 0.158869; n = 100, w = 0.2:
    # start = 0.158869 * 80 = 12.71 -> 12, end = 32.71 -> 32
    assert window_position(2, 4, 100, 0.2, 10.0) == (12, 32)
    # update 4 of 4: x = 1, sigmoid = 1 / (1 + e^-5) = 0.993307 -> start 79.46 -> 79, end 99
    assert window_position(4, 4, 100, 0.2, 10.0) == (79, 99)
    # one delta update only (update_times = 2): x = 1 as well; update_times=1 does not divide by zero
    assert window_position(2, 2, 100, 0.2, 10.0) == (79, 99)
    assert window_position(1, 1, 100, 0.2, 10.0) == (79, 99)


def test_delta_loss_window_is_cut_at_the_first_negative_drop():
    # deltas given unsorted; ranked: 5,4,3,2,1,-1,-2,-3,-4,-5. w = 0.5, x = 1: start = int(0.9933 * 5) = 4,
    # end = int(4.966 + 5) = 9, cut at rank 5 (first negative) -> window = rank 4 only (delta 1, index 0).
    delta = np.array([1, -3, 5, -1, 2, -5, 4, -2, 3, -4], dtype=float)
    probs, window = delta_loss_probs(delta, 2, 2, window_size=0.5, steepness=10.0, outside_weight=0.025)
    assert window == (4, 5)
    expected = np.full(10, 0.025)
    expected[0] = 1.0
    assert np.allclose(probs, expected / expected.sum())


def test_delta_loss_window_moves_from_large_to_small_drops():
    delta = np.linspace(10, 1, 100)  # all positive, already ranked
    early, _ = delta_loss_probs(delta, 2, 5, window_size=0.2, steepness=10.0, outside_weight=0.0)
    late, _ = delta_loss_probs(delta, 5, 5, window_size=0.2, steepness=10.0, outside_weight=0.0)
    assert (early @ delta) > (late @ delta) + 5


def test_less_scores_equal_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    train = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    target = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    groups = np.array([0, 1, 0, 2, 1, 1])
    scores = less_scores(train, target, groups)
    for i in range(5):
        per_group = []
        for k in range(3):
            rows = [j for j in range(6) if groups[j] == k]
            per_group.append(sum(float(train[i] @ target[j]) for j in rows) / len(rows))
        assert math.isclose(float(scores[i]), max(per_group), rel_tol=1e-5)


def test_round_robin_nearest_neighbours():
    ranked = np.array([[1, 2, 3], [2, 4, 5]])
    # column 0: 1, 2; column 1: 2 (taken), 4; column 2: 3, 5
    assert round_robin_neighbours(ranked, 4).tolist() == [1, 2, 4, 3]
    with pytest.raises(ValueError, match="distinct"):
        round_robin_neighbours(ranked, 6)


def test_tsds_uniform_over_nearest_when_sigma_is_zero():
    # one target at 0, candidates at distance 0,1,...,5; alpha = .5, C = 4: stop when cost >= 4.
    # level 1: cost = d1 - d0 = 1; level 2: cost = 2 d2 - (d0 + d1) = 3; level 3: 3 d3 - (0+1+2) = 6 -> stop
    # at s = 3 with two neighbours in (1/3 each) and the remaining 1/3 to the third.
    queries = torch.zeros(1, 2)
    cands = torch.tensor([[float(k), 0.0] for k in range(6)])
    p = tsds_probabilities(queries, cands, max_K=6, kde_K=6, sigma=0.0, alpha=0.5, C=4.0)
    assert np.allclose(p, [1 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    # C = 1: already level 1 costs 1 >= 1 -> all mass on the nearest
    p = tsds_probabilities(queries, cands, max_K=6, kde_K=6, sigma=0.0, alpha=0.5, C=1.0)
    assert np.allclose(p, [1, 0, 0, 0, 0, 0])


def test_tsds_kde_splits_the_mass_of_near_duplicates():
    # c0 == c1 (kde 2 each with sigma 1), c2 alone (kde 1), all at distance 1; c3, c4, c5 at 3, 3.5, 3.6.
    # Water-filling (C = 20) admits c0..c4 before the heap empties: s = .5+.5+1+1+1 = 4, mass 1/(s kde):
    # c0 = c1 = 1/8, c2 = c3 = c4 = 1/4, nothing left for c5. The duplicate pair shares one point's mass.
    queries = torch.zeros(1, 2)
    cands = torch.tensor([[1.0, 0], [1.0, 0], [-1.0, 0], [0, 3.0], [0, -3.5], [3.6, 0]])
    p = tsds_probabilities(queries, cands, max_K=6, kde_K=6, sigma=1.0, alpha=0.5, C=20.0)
    assert np.allclose(p, [0.125, 0.125, 0.25, 0.25, 0.25, 0.0])


def test_tsds_chunked_neighbours_and_density_equal_the_full_matrix():
    """Issue 13 item 8: blocks of 3 query rows give the same neighbours and KDE as the whole distance
    matrix."""
    g = torch.Generator().manual_seed(0)
    cands, queries = torch.randn(20, 4, generator=g), torch.randn(5, 4, generator=g)
    d2_full = torch.cdist(queries.double(), cands.double()).square()
    d2, idx = nearest(queries, cands, 7, rows=3, use_faiss=False)
    ref_d2, ref_idx = torch.topk(d2_full, 7, dim=1, largest=False)
    np.testing.assert_allclose(d2, ref_d2.numpy(), atol=1e-12)
    assert (idx == ref_idx.numpy()).all()
    cd2 = torch.cdist(cands.double(), cands.double()).square()
    kk = torch.topk(cd2, 6, dim=1, largest=False).values.numpy()
    expected = np.maximum(0.0, 1.0 - kk / 1.5**2).sum(axis=1)
    density = kernel_density(cands, 6, 1.5, rows=3, use_faiss=False)
    np.testing.assert_allclose(density.kde, expected, atol=1e-12)
    assert (density.inside == (kk < 1.5**2).sum(axis=1)).all()
    full = tsds_probabilities(queries, cands, max_K=10, kde_K=6, sigma=1.5, alpha=0.5, C=5.0)
    chunked = tsds_probabilities(queries, cands, max_K=10, kde_K=6, sigma=1.5, alpha=0.5, C=5.0, rows=2)
    np.testing.assert_allclose(chunked, full, atol=1e-12)


def test_tsds_kde_on_fixed_numbers():
    # points 0, 0.5, 3 on a line, sigma 1, kde_K 2 (itself + nearest): 1 + (1 - .25) = 1.75 for the first two,
    # 1 + max(0, 1 - 2.5^2) = 1 for the third
    pts = torch.tensor([[0.0], [0.5], [3.0]])
    np.testing.assert_allclose(kernel_density(pts, 2, 1.0, use_faiss=False).kde, [1.75, 1.75, 1.0])


def test_tsds_official_caps_on_K():
    # the authors' code: max_K = min(max_K, N // 10), kde_K = min(kde_K, N // 10)
    assert capped_neighbours(900, 5000, 1000, cap=True) == (90, 90)
    assert capped_neighbours(50_000, 5000, 1000, cap=True) == (5000, 1000)
    assert capped_neighbours(15, 5000, 1000, cap=True) == (2, 1)
    assert capped_neighbours(900, 5000, 1000, cap=False) == (900, 900)


def test_tsds_sigma_is_scaled_to_the_embedding_space_and_flat_kdes_warn():
    """Issue 15: orthonormal points (pairwise distance sqrt(2), like a sentence encoder's) keep the authors'
    0.75; a space compressed 10x gets 0.075; a fixed 0.75 there makes the KDE flat, which warns."""
    basis = torch.eye(40)
    assert scaled_sigma(basis) == pytest.approx(0.75)
    g = torch.Generator().manual_seed(1)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=1)
    compressed = centres.repeat_interleave(50, 0) * 0.1 + 0.02 * torch.randn(200, 16, generator=g)
    sigma = scaled_sigma(compressed)
    assert sigma == pytest.approx(0.75 / math.sqrt(2) * float(torch.pdist(compressed.double()).median()))
    assert sigma < 0.2
    flat = kernel_density(compressed, 20, 0.75, use_faiss=False)
    assert "near-uniform" in near_uniform_warning(flat, 20, 0.75, compressed)
    assert near_uniform_warning(kernel_density(compressed, 20, sigma), 20, sigma, compressed) is None
    assert near_uniform_warning(kernel_density(compressed, 20, 0.0), 20, 0.0, compressed) is None


def test_tsds_memory_estimate_and_check(monkeypatch):
    # 1000 candidates, 64 targets, width 32, K 100: embeddings 4 * 1064 * 32, neighbours 16 * 64 * 100,
    # one distance block (all 1000 rows fit in 128 MiB: 1000 * 1000 * 8) twice, densities 16 * 1000
    assert tsds_memory_bytes(1000, 64, 32, 100) == 4 * 1064 * 32 + 16 * 64 * 100 + 2 * 8_000_000 + 16_000
    # 50k candidates: the block is capped at ~128 MiB instead of the 20 GB matrix
    assert tsds_memory_bytes(50_000, 64, 1024, 5000) < 1 << 30
    import dataflex.train.selector.tsds_selector as tsds
    from dataflex.config.component.select import TsdsSelectorConfig

    monkeypatch.setattr(tsds, "available_memory_bytes", lambda device: 10 << 20)
    sel = TsdsSelector(None, None, None, None, config=TsdsSelectorConfig(target_domain="target"))

    class Model:
        class config:  # noqa: N801
            hidden_size = 64

    with pytest.raises(MemoryError, match=r"trainer\.candidate_pool_size"):
        sel.check_memory(Model(), num_candidates=50_000, device="cpu")
    sel.check_memory(Model(), num_candidates=200, device="cpu")


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.randn(20, 2, generator=g) * 0.05 + c
            for c in (torch.tensor([5.0, 0]), torch.tensor([0, 5.0]), torch.tensor([-5.0, 0]))
        ]
    )
    assign = kmeans(x, 3, 10, np.random.default_rng(0))
    groups = [set(assign[i * 20 : (i + 1) * 20]) for i in range(3)]
    assert all(len(gr) == 1 for gr in groups) and len(set.union(*groups)) == 3


def test_top_k_and_weighted_sample():
    rng = np.random.default_rng(0)
    assert sorted(top_k(np.array([0.1, 0.9, 0.5, 0.9]), 2, rng).tolist()) == [1, 3]
    with pytest.raises(ValueError, match="top 5"):
        top_k(np.zeros(3), 5, rng)
    draws = weighted_sample(np.array([0.0, 1.0, 3.0]), 2, rng, replacement=False)
    assert sorted(draws.tolist()) == [1, 2]
    with pytest.raises(ValueError, match="positive probability"):
        weighted_sample(np.array([0.0, 0.0, 1.0]), 2, rng, replacement=False)


def test_nice_token_f1_and_prompt_split():
    assert token_f1([1, 2, 3], [1, 2, 3]) == 1.0
    assert token_f1([1, 2], [3]) == 0.0
    # common 2, precision 2/4, recall 2/3 -> F1 = 2 * .5 * .6667 / 1.1667 = 0.5714
    assert math.isclose(token_f1([1, 2, 9, 9], [1, 2, 3]), 4 / 7)

    class Item:
        input_ids = [5, 6, 7, 8, 9]
        labels = [-100, -100, -100, 8, 9]

    assert split_prompt(Item()) == ([5, 6, 7], [8, 9])
