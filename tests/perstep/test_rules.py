"""Per-step selection rules on hand-derived numbers: GREATS' greedy gains on a 4x4 Gram, RHO-LOSS ranks,
top-b ties, seeded uniform."""

from __future__ import annotations

import pytest
import torch

from dataflex.train.perstep.rules import greats_greedy, rho_loss_scores, top_b, uniform_choice

V = torch.tensor([3.0, 2.9, 1.0, 0.5])


def _gram(g01: float) -> torch.Tensor:
    g = torch.eye(4)
    g[0, 1] = g[1, 0] = g01
    return g


def test_greats_trades_alignment_against_redundancy_by_hand():
    # lr = 1: pick 0 (gain 3); candidate 1 loses <g1, g0> = 2.5 -> 0.4, so 2 (gain 1) then 3 (0.5) beat it.
    choice = greats_greedy(V, _gram(2.5), 3, lr=1.0)
    assert choice.indices == [0, 2, 3]
    assert choice.scores == pytest.approx([3.0, 1.0, 0.5])
    # a weak interaction keeps the two aligned ones: after 0, gain of 1 is 2.9 - 0.9 = 2.0
    choice = greats_greedy(V, _gram(0.9), 3, lr=1.0)
    assert choice.indices == [0, 1, 2]
    assert choice.scores == pytest.approx([3.0, 2.0, 1.0])


def test_greats_interaction_scales_with_lr_squared():
    # lr = 0.1: gains 0.1 v; after 0, candidate 1 keeps 0.29 - 0.01 * 2.5 = 0.265 > 0.1: redundancy is cheap
    choice = greats_greedy(V, _gram(2.5), 2, lr=0.1)
    assert choice.indices == [0, 1]
    assert choice.scores == pytest.approx([0.3, 0.265])


def test_greats_self_interaction_subtracts_half_the_squared_norm():
    gram = torch.diag(torch.tensor([5.0, 0.1, 1.0, 1.0]))
    # gains 3 - 2.5 = 0.5, 2.9 - 0.05 = 2.85, 1 - 0.5 = 0.5, 0.5 - 0.5 = 0
    choice = greats_greedy(V, gram, 2, lr=1.0, self_interaction=True)
    assert choice.indices == [1, 0]  # tie 0.5 / 0.5 between 0 and 2 goes to the lower index
    assert choice.scores == pytest.approx([2.85, 0.5])
    assert greats_greedy(V, gram, 2, lr=1.0).indices == [0, 1]


def test_greats_equals_a_brute_force_marginal_gain_on_random_numbers():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    val = torch.randn(5, generator=gen, dtype=torch.float64)
    lr = 0.3
    chosen: list[int] = []
    for _ in range(5):
        gains = {
            i: lr * float(feats[i] @ val) - lr**2 * sum(float(feats[i] @ feats[j]) for j in chosen)
            for i in range(9)
            if i not in chosen
        }
        chosen.append(max(gains, key=lambda i: (gains[i], -i)))
    assert greats_greedy(feats @ val, feats @ feats.T, 5, lr).indices == chosen


def test_rho_loss_ranks_by_training_minus_reference_loss():
    train = torch.tensor([2.0, 1.5, 3.0, 0.7])
    reference = torch.tensor([1.0, 0.2, 2.9, 0.1])
    rho = rho_loss_scores(train, reference)
    assert rho.tolist() == pytest.approx([1.0, 1.3, 0.1, 0.6])
    assert top_b(rho, 2).indices == [1, 0]  # RHO-LOSS: reducible, not just hard
    assert top_b(train, 2).indices == [2, 0]  # MaxLoss would take the noisy 2
    with pytest.raises(ValueError, match="reference losses"):
        rho_loss_scores(train, reference[:3])


def test_top_b_ties_and_nan():
    assert top_b(torch.tensor([1.0, float("nan"), 1.0, 0.5]), 3).indices == [0, 2, 3]
    with pytest.raises(ValueError, match="0 < b <= B"):
        top_b(torch.tensor([1.0]), 2)


def test_uniform_is_seeded_by_seed_and_step_only():
    a = uniform_choice(8, 4, seed=1, step=3)
    assert a == uniform_choice(8, 4, seed=1, step=3)
    assert len(set(a.indices)) == 4 and all(0 <= i < 8 for i in a.indices)
    assert {tuple(uniform_choice(8, 4, seed=1, step=s).indices) for s in range(6)} != {tuple(a.indices)}
