"""ADO's update rule on hand-derived numbers, its power-law fit on exact data, and its smoothing filter."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dataflex.mixing.ado import (
    AdoConfig,
    AdoRule,
    clip_min_probability,
    fit_power_laws,
    power_law,
    savgol_smooth,
)

# Domain 0: L = 1 + 2 / n**0.5; domain 1: L = 1 + 4 / n**0.25
# (params are (a, e, alpha) = (log A, log E, alpha)).
PARAMS = np.array([[math.log(2.0), 0.0, 0.5], [math.log(4.0), 0.0, 0.25]])


def _rule_at_n100(**cfg) -> AdoRule:
    """A rule that has seen two steps of 50 samples (n = 100 for both domains: same_step_size), with the
    sampled-share EMA still at the uniform prior, and the laws above."""
    rule = AdoRule(np.array([0.5, 0.5]), AdoConfig(**cfg))
    rule.observe(np.array([25, 25]), np.array([2.0, 3.0]))
    rule.observe(np.array([25, 25]), np.array([1.9, 2.9]))
    rule.params = PARAMS.copy()
    rule.last_fit = 10**9  # never refit in these tests
    return rule


def test_slope_is_the_derivative_of_the_fitted_law():
    rule = _rule_at_n100()
    # -dL/dn = alpha * A / n**(alpha+1) = alpha * (L(n) - E) / n
    np.testing.assert_allclose(rule.slope(), [0.5 * 2 / 100**1.5, 0.25 * 4 / 100**1.25], rtol=1e-12)


def test_instant_target_by_hand():
    # slope ratio = 100**0.25 = sqrt(10); equal prior and equal sqrt(h(1-h)) -> target_0 = 1 / (1 + sqrt 10)
    t0 = 1.0 / (1.0 + math.sqrt(10.0))
    np.testing.assert_allclose(_rule_at_n100().instant_target(), [t0, 1 - t0], rtol=1e-12)


def test_prior_and_sampled_share_weight_the_target():
    rule = _rule_at_n100()
    rule.prior = np.array([0.8, 0.2])
    rule.sampled_share = np.array([0.9, 0.1])  # sqrt(h(1-h)) is the same for 0.9 and 0.1
    w0, w1 = 0.8 * 1.0, 0.2 * math.sqrt(10.0)
    np.testing.assert_allclose(rule.instant_target(), [w0 / (w0 + w1), w1 / (w0 + w1)], rtol=1e-12)
    rule.sampled_share = np.array([0.5, 0.1])  # sqrt(.25) = .5 vs sqrt(.09) = .3
    w0, w1 = 0.8 * 0.5, 0.2 * math.sqrt(10.0) * 0.3
    np.testing.assert_allclose(rule.instant_target(), [w0 / (w0 + w1), w1 / (w0 + w1)], rtol=1e-12)


def test_exponent_floor_applies_to_the_slope_only():
    rule = _rule_at_n100()
    rule.params = np.array([[0.0, 0.0, 0.01], [0.0, 0.0, 0.01]])
    # L(n) - E = 1 / 100**0.01 (the raw alpha), times the floored 0.05, over n
    np.testing.assert_allclose(rule.slope(), [0.05 * 100**-0.01 / 100] * 2, rtol=1e-12)


def test_target_mixes_the_running_average_and_updates_it_per_step():
    rule = _rule_at_n100()
    t = rule.instant_target()
    p = rule.target(9)  # first call after 9 steps: p = 0.9 prior + 0.1 t; p_avg = (9 prior + t) / 10
    np.testing.assert_allclose(p, 0.9 * 0.5 + 0.1 * t, rtol=1e-12)
    np.testing.assert_allclose(rule.p_avg, (9 * 0.5 + t) / 10, rtol=1e-12)
    # the code's per-step update, one step later: p_avg <- (1 - 1/11) p_avg + t / 11
    before = rule.p_avg.copy()
    rule.target(10)
    np.testing.assert_allclose(rule.p_avg, (1 - 1 / 11) * before + t / 11, rtol=1e-12)
    # five steps later (trainer.update_step=5): the target stands for those five steps
    before = rule.p_avg.copy()
    rule.target(15)
    np.testing.assert_allclose(rule.p_avg, (11 * before + 5 * t) / 16, rtol=1e-12)


def test_no_target_before_start_step_or_without_a_fit():
    rule = _rule_at_n100(start_step=20)
    assert rule.target(19) is None
    fresh = AdoRule(np.array([0.5, 0.5]))
    fresh.observe(np.array([1, 1]), np.array([1.0, 1.0]))
    assert fresh.target(1) is None  # too few points to fit three parameters


def test_missing_domain_loss_is_imputed_from_its_last_value():
    rule = AdoRule(np.array([0.5, 0.5]), AdoConfig(same_step_size=False))
    rule.observe(np.array([4, 0]), np.array([2.0, np.nan]))  # first step: the mean of present losses
    rule.observe(np.array([1, 3]), np.array([1.5, 3.0]))
    rule.observe(np.array([4, 0]), np.array([1.4, np.nan]))
    np.testing.assert_array_equal(rule.losses[:, 1], [2.0, 3.0, 3.0])
    np.testing.assert_array_equal(rule.counts, [[4, 0], [1, 3], [4, 0]])  # own counts when not same step size
    # h: 0.9 * h + 0.1 * shares, three times from [0.5, 0.5]
    h = np.array([0.5, 0.5])
    for c in ([1.0, 0.0], [0.25, 0.75], [1.0, 0.0]):
        h = 0.9 * h + 0.1 * np.array(c)
    np.testing.assert_allclose(rule.sampled_share, h, rtol=1e-12)


def test_clip_min_probability():
    np.testing.assert_allclose(
        clip_min_probability(np.array([0.995, 0.005]), 0.01), [0.995 / 1.005, 0.01 / 1.005]
    )
    np.testing.assert_allclose(clip_min_probability(np.array([0.7, 0.3]), 0.01), [0.7, 0.3])


@pytest.mark.parametrize("truth", [(1.5, 0.8, 0.35), (3.0, 1.2, 0.6)])
def test_fit_recovers_an_exact_power_law(truth):
    n = 64.0 * np.arange(1, 201, 10)
    loss = power_law(np.array(truth), n)
    params, value = fit_power_laws(n[None], loss[None])
    np.testing.assert_allclose(power_law(params[0], n), loss, rtol=2e-3)
    np.testing.assert_allclose(params[0], truth, atol=0.05)
    assert value[0] < 0.05


def test_observe_fit_target_end_to_end_on_law_data():
    """Two domains whose per-step losses follow power laws exactly (irreducible parts above the code's
    e >= 0.5 bound): observe -> smooth -> subsample -> fit recovers both laws, and the target follows the
    true slopes."""
    truth = np.array([[1.0, 0.6, 0.5], [2.0, 0.9, 0.3]])
    rule = AdoRule(np.array([0.5, 0.5]), AdoConfig(fit_stride=2, smooth_window=7))
    for step in range(1, 61):
        rule.observe(np.array([25, 25]), power_law(truth, 50 * step))
    rule.fit()
    n = rule.counts.sum(0)
    np.testing.assert_allclose(power_law(rule.params, n), power_law(truth, n), rtol=1e-3)
    true_slope = truth[:, 2] * np.exp(truth[:, 0]) / n ** (truth[:, 2] + 1)
    np.testing.assert_allclose(rule.instant_target(), true_slope / true_slope.sum(), rtol=0.03)


def test_e_floor_bounds_the_irreducible_loss():
    """The code's penalty keeps exp(e) >= exp(0.5) even when the data's irreducible loss is 1: the fitted
    law then sits above the data's floor; lowering e_floor lets it fit."""
    n = 64.0 * np.arange(1, 201, 10)
    loss = power_law(np.array([1.0, 0.0, 0.5]), n)
    bounded, _ = fit_power_laws(n[None], loss[None])
    free, _ = fit_power_laws(n[None], loss[None], e_floor=-2.0)
    assert bounded[0, 1] > 0.45
    np.testing.assert_allclose(free[0], [1.0, 0.0, 0.5], atol=0.02)


def test_savgol_reproduces_a_cubic_and_matches_scipy():
    x = np.linspace(-1, 1, 40)
    cubic = 2 * x**3 - x**2 + 0.5 * x + 3
    np.testing.assert_allclose(savgol_smooth(cubic, 11, 3), cubic, atol=1e-10)
    signal = pytest.importorskip("scipy.signal")
    y = np.random.default_rng(0).normal(size=(3, 150)).cumsum(-1)
    np.testing.assert_allclose(savgol_smooth(y, 101, 3), signal.savgol_filter(y, 101, 3, axis=-1), atol=1e-9)
    np.testing.assert_allclose(
        savgol_smooth(y[:, :30], 101, 3), signal.savgol_filter(y[:, :30], 29, 3), atol=1e-9
    )


def test_state_round_trip_continues_identically():
    a = _rule_at_n100()
    a.target(9)
    b = AdoRule(np.array([0.5, 0.5]))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.target(12), b.target(12))
