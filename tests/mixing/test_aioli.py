"""Aioli's LearnParams estimate, normalisation and exponentiated-gradient update on hand-derived numbers,
and the round state machine (probe order, which calls need losses, restricted mode, resume)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dataflex.mixing.aioli import (
    AioliConfig,
    AioliRule,
    estimate_params,
    normalize_params,
    probe_mixture,
    probe_order,
)

# Two domains, one sweep, probe order [1, 0]: eval 3.0/4.0 at the start, 2.9/3.5 after probing domain 1,
# 2.5/3.4 after probing domain 0. Column j collects the drops of the probe of j:
# col 1 = [3.0-2.9, 4.0-3.5] = [0.1, 0.5]; col 0 = [2.9-2.5, 3.5-3.4] = [0.4, 0.1].
LOSS_0 = np.array([3.0, 4.0])
ORDER = np.array([1, 0])
AFTER = np.array([[2.9, 3.5], [2.5, 3.4]])
GRAPH = np.array([[0.4, 0.1], [0.1, 0.5]])


def test_probe_mixture():
    np.testing.assert_allclose(probe_mixture(3, 1, 0.625), [0.1875, 0.625, 0.1875])
    np.testing.assert_allclose(probe_mixture(2, 0, 1.0), [1.0, 0.0])


def test_one_hot_probes_give_the_loss_drops():
    np.testing.assert_allclose(estimate_params(LOSS_0, ORDER, AFTER, 1, 1.0), GRAPH, atol=1e-12)


def test_smoothed_probes_are_unmixed_by_the_probe_matrix():
    # f = 0.75: W = [[.75, .25], [.25, .75]], W^-1 = 2 [[.75, -.25], [-.25, .75]];
    # a_0 = W^-1 [0.4, 0.1] = [0.55, -0.05], a_1 = W^-1 [0.1, 0.5] = [-0.1, 0.7]
    a = estimate_params(LOSS_0, ORDER, AFTER, 1, 0.75)
    np.testing.assert_allclose(a, [[0.55, -0.05], [-0.1, 0.7]], atol=1e-12)
    d = estimate_params(LOSS_0, ORDER, AFTER, 1, 0.75, diagonal=True)
    np.testing.assert_allclose(d, [[0.4 / 0.75, 0.0], [0.0, 0.5 / 0.75]], atol=1e-12)


def test_drops_are_averaged_over_sweeps():
    order = np.array([1, 0, 0, 1])
    # second sweep: probe 0 drops [0.2, 0.0], probe 1 drops [0.0, 0.3]
    after = np.vstack([AFTER, [[2.3, 3.4], [2.3, 3.1]]])
    np.testing.assert_allclose(
        estimate_params(LOSS_0, order, after, 2, 1.0), [[0.3, 0.05], [0.05, 0.4]], atol=1e-12
    )


def test_normalize_shifts_negative_entries_then_scales():
    a = np.array([[0.55, -0.05], [-0.1, 0.7]])
    np.testing.assert_allclose(normalize_params(a), np.array([[0.65, 0.05], [0.0, 0.8]]) / 1.5, atol=1e-12)
    np.testing.assert_allclose(normalize_params(GRAPH), GRAPH / 1.1, atol=1e-12)


def _cfg(**kw) -> AioliConfig:
    base = dict(lp_rounds=1, lp_steps=2, round_steps=8, eta=0.2, one_hot_factor=0.75, seed=0)
    base.update(kw)
    return AioliConfig(**base)


def _run_round(rule: AioliRule, loss_0, after_by_domain) -> list[np.ndarray]:
    """One round: the eval losses after probing domain j are `after_by_domain[j]`, in the rule's order."""
    out = [rule.advance(loss_0)]
    for j in rule.order:
        out.append(rule.advance(after_by_domain[int(j)]))
    while rule.segment != 0:
        assert not rule.wants_losses
        out.append(rule.advance(None))
    return out


def test_round_probes_then_exploits_the_eg_update():
    rule = AioliRule(2, _cfg())
    order = rule.order.tolist()
    assert sorted(order) == [0, 1] and rule.wants_losses
    # make the chained drops equal those of the module-level example whatever the order
    after = {1: np.array([2.9, 3.5]), 0: np.array([2.5, 3.4])} if order == [1, 0] else None
    if after is None:  # order [0, 1]: probe 0 first
        after = {0: np.array([2.6, 3.9]), 1: np.array([2.5, 3.4])}
    out = _run_round(rule, LOSS_0, after)
    assert len(out) == 4  # 8 steps / 2 per segment: 2 probes + 2 exploit segments
    np.testing.assert_allclose(out[0], probe_mixture(2, order[0], 0.75))
    np.testing.assert_allclose(out[1], probe_mixture(2, order[1], 0.75))
    a = normalize_params(
        estimate_params(LOSS_0, np.array(order), np.stack([after[j] for j in order]), 1, 0.75)
    )
    col = a.sum(axis=0)
    p0 = 1.0 / (1.0 + math.exp(0.2 * (col[1] - col[0])))
    np.testing.assert_allclose(out[2], [p0, 1 - p0], rtol=1e-12)
    np.testing.assert_allclose(out[3], out[2])
    assert rule.round == 1 and rule.wants_losses


def test_eg_update_by_hand():
    """f = 0.75 example: normalised A = [[.65, .05], [0, .8]] / 1.5, column sums [.65, .85] / 1.5;
    p = softmax(0.2 * colsum): p_0 = 1 / (1 + exp(0.2 * 0.2 / 1.5))."""
    rule = AioliRule(2, _cfg())
    rule.order = ORDER.copy()
    out = _run_round(rule, LOSS_0, {1: AFTER[0], 0: AFTER[1]})
    p0 = 1.0 / (1.0 + math.exp(0.2 * 0.2 / 1.5))
    np.testing.assert_allclose(out[2], [p0, 1 - p0], rtol=1e-12)


def test_second_round_multiplies_without_ema_and_restarts_with_ema():
    rounds = [
        (ORDER, {1: AFTER[0], 0: AFTER[1]}),
        (ORDER, {1: np.array([2.0, 3.0]), 0: np.array([1.0, 2.9])}),
    ]
    # round 2, order [1, 0] from loss_0 = [2.5, 3.4]: col 1 = [0.5, 0.4], col 0 = [1.0, 0.1]
    a1 = normalize_params(np.linalg.solve([[0.75, 0.25], [0.25, 0.75]], GRAPH.T).T)
    a2 = normalize_params(
        np.linalg.solve([[0.75, 0.25], [0.25, 0.75]], np.array([[1.0, 0.5], [0.1, 0.4]]).T).T
    )
    for ema, expected_logits in [(None, 0.2 * (a1 + a2).sum(0)), (0.1, 0.2 * (0.9 * a2 + 0.1 * a1).sum(0))]:
        rule = AioliRule(2, _cfg(ema=ema))
        outs = []
        for loss_0, (order, after) in zip([LOSS_0, np.array([2.5, 3.4])], rounds):
            rule.order = order.copy()
            outs = _run_round(rule, loss_0, after)
        e = np.exp(expected_logits - expected_logits.max())
        np.testing.assert_allclose(outs[2], e / e.sum(), rtol=1e-12)


def test_restricted_mode_restarts_from_uniform_unless_told_to_start_from_the_prior():
    prior = np.array([0.9, 0.1])
    code = AioliRule(2, _cfg(), prior=prior)
    code.order = ORDER.copy()
    adjusted = AioliRule(2, _cfg(start_from_prior=True), prior=prior)
    adjusted.order = ORDER.copy()
    after = {1: AFTER[0], 0: AFTER[1]}
    p_code = _run_round(code, LOSS_0, after)[2]
    p_adj = _run_round(adjusted, LOSS_0, after)[2]
    g = math.exp(0.2 * 0.2 / 1.5)  # w_1 / w_0 from the update alone
    np.testing.assert_allclose(p_code, [1 / (1 + g), g / (1 + g)], rtol=1e-12)
    np.testing.assert_allclose(p_adj, [0.9 / (0.9 + 0.1 * g), 0.1 * g / (0.9 + 0.1 * g)], rtol=1e-12)


def test_probe_order_is_a_seeded_sweep_of_permutations():
    order = probe_order(3, 2, seed=5, round_index=1)
    assert sorted(order[:3].tolist()) == [0, 1, 2] and sorted(order[3:].tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(order, probe_order(3, 2, seed=5, round_index=1))


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(round_steps=9), "multiple of lp_steps"),
        (dict(round_steps=4), "leaves no step"),
        (dict(one_hot_factor=0.5), "one_hot_factor"),
    ],
)
def test_bad_configs_name_the_fix(kw, message):
    with pytest.raises(ValueError, match=message):
        AioliRule(2, _cfg(**kw))


def test_missing_losses_at_a_probe_boundary_raise():
    rule = AioliRule(2, _cfg())
    with pytest.raises(ValueError, match="needs the eval losses"):
        rule.advance(None)


def test_state_round_trip_mid_round():
    a = AioliRule(3, _cfg(lp_steps=1, round_steps=5, one_hot_factor=0.6))
    rng = np.random.default_rng(1)
    for _ in range(2):
        a.advance(rng.random(3) + 2)
    b = AioliRule(3, _cfg(lp_steps=1, round_steps=5, one_hot_factor=0.6))
    b.load_state_dict(a.state_dict())
    for _ in range(6):
        x = rng.random(3) + 1
        np.testing.assert_array_equal(a.advance(x), b.advance(x))
