"""Mixing-law fit and proposer on synthetic sweeps generated from a known law: the fit recovers the law, the
held-out error is reported, and the proposer finds the known optimum under caps and a KL budget."""

from __future__ import annotations

import numpy as np
import pytest

from dataflex.mixing.laws import (
    LinearLaw,
    LogLinearLaw,
    cross_validate,
    fit_law,
    linear_oracle,
    propose,
    sample_mixtures,
    spearman,
)

# Two targets over three domains (gauge: the last exponent is 0).
TRUE = LogLinearLaw(
    c=np.array([1.5, 2.0]), k=np.array([0.8, 1.2]), t=np.array([[-1.5, 0.7, 0.0], [0.4, -2.0, 0.0]])
)


def _sweep(n: int = 40, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r = sample_mixtures(np.full(3, 1 / 3), n, seed=seed)
    y = TRUE.predict(r)
    return r, y + noise * np.random.default_rng(seed + 1).normal(size=y.shape)


def test_fit_recovers_the_law_from_exact_data():
    r, y = _sweep()
    law = fit_law(r, y)
    np.testing.assert_allclose(law.c, TRUE.c, atol=1e-5)
    np.testing.assert_allclose(law.k, TRUE.k, atol=1e-5)
    np.testing.assert_allclose(law.t, TRUE.t, atol=1e-5)


def test_fit_handles_the_gauge_of_an_ungauged_law():
    """Data from t with a non-zero last exponent: the same function with t - t_K and k e^{t_K}."""
    t = np.array([[0.5, 1.0, 2.0]])
    r = sample_mixtures(np.full(3, 1 / 3), 30, seed=3)
    y = 1.0 + 0.5 * np.exp(r @ t.T)
    law = fit_law(r, y)
    np.testing.assert_allclose(law.t, t - 2.0, atol=1e-5)
    np.testing.assert_allclose(law.k, 0.5 * np.exp(2.0), rtol=1e-5)


def test_held_out_error_is_small_for_the_right_law_and_reported_per_target():
    r, y = _sweep(n=40, noise=0.002)
    report = cross_validate(r, y, "log_linear", folds=5)
    assert len(report.mae) == 2 and all(m < 0.005 for m in report.mae)
    assert all(s > 0.95 for s in report.spearman)
    linear = cross_validate(r, y, "linear", folds=5)
    assert all(lin > log for lin, log in zip(linear.mae, report.mae))  # the wrong family is worse


def test_linear_law_recovers_a_linear_truth():
    w = np.array([[2.0, 3.0, 5.0]])
    r = sample_mixtures(np.full(3, 1 / 3), 10, seed=0)
    law = fit_law(r, r @ w.T, "linear")
    np.testing.assert_allclose(law.w, w, atol=1e-10)


def test_spearman_by_hand():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # d = [0, 0, 1, -1] -> 1 - 6*2/(4*15) = 0.8
    assert spearman(np.array([1, 2, 3, 4]), np.array([1, 2, 4, 3])) == pytest.approx(0.8)


SINGLE = LogLinearLaw(c=np.array([1.0]), k=np.array([2.0]), t=np.array([[0.5, -1.0, 0.3, 0.0]]))
"""One target, monotone in t.p: the best mixture puts everything on the smallest exponents."""
UNIFORM4 = np.full(4, 0.25)


def test_unconstrained_optimum_is_the_vertex_of_the_smallest_exponent():
    prop = propose(SINGLE, UNIFORM4)
    np.testing.assert_allclose(prop.proportions, [0, 1, 0, 0], atol=1e-12)
    assert prop.objective == pytest.approx(1.0 + 2.0 * np.exp(-1.0))


def test_caps_fill_the_cheapest_domains_in_order():
    prop = propose(SINGLE, UNIFORM4, max_proportion=0.4)
    # t sorted: domain 1 (-1.0), domain 3 (0.0), domain 2 (0.3): 0.4, 0.4, 0.2
    np.testing.assert_allclose(prop.proportions, [0.0, 0.4, 0.2, 0.4], atol=1e-12)


def test_kl_budget_gives_the_gibbs_mixture_at_exactly_that_budget():
    """min t.p s.t. KL(p||q) <= eps has the solution p ∝ q exp(-beta t) with KL = eps."""
    q = np.array([0.1, 0.2, 0.3, 0.4])
    prop = propose(SINGLE, q, max_kl=0.05)
    p = prop.proportions
    assert prop.kl_to_prior == pytest.approx(0.05, abs=1e-6)
    # log(p/q) is affine in t with a negative slope
    slope, intercept = np.polyfit(SINGLE.t[0], np.log(p / q), 1)
    np.testing.assert_allclose(np.log(p / q), slope * SINGLE.t[0] + intercept, atol=1e-6)
    assert slope < 0


def test_two_targets_interior_optimum_matches_a_grid_search():
    grid = np.array(
        [(a, b, 1 - a - b) for a in np.arange(0, 1.0001, 0.005) for b in np.arange(0, 1.0001 - a, 0.005)]
    )
    grid = np.clip(grid, 0, None)
    values = TRUE.predict(grid).mean(1)
    best = grid[values.argmin()]
    prop = propose(TRUE, np.full(3, 1 / 3))
    assert prop.objective <= values.min() + 1e-9
    np.testing.assert_allclose(prop.proportions, best, atol=0.01)


def test_kl_and_caps_together_stay_feasible_and_beat_the_prior():
    q = np.full(3, 1 / 3)
    prop = propose(TRUE, q, max_kl=0.02, max_proportion=[0.45, 0.45, 1.0])
    assert prop.kl_to_prior <= 0.02 + 1e-9 and (prop.proportions <= 0.45 + 1e-9)[:2].all()
    assert prop.objective < TRUE.predict(q).mean()


def test_infeasible_constraints_are_refused_with_the_numbers():
    with pytest.raises(ValueError, match="sum to 0.75 < 1"):
        propose(SINGLE, UNIFORM4, max_proportion=[0.25, 0.25, 0.25, 1.0][:3] + [0.0])
    with pytest.raises(ValueError, match="no mixture within max_kl=0.01"):
        propose(SINGLE, np.array([0.7, 0.1, 0.1, 0.1]), max_kl=0.01, max_proportion=0.3)


def test_oracle_never_puts_mass_outside_the_prior_support():
    s = linear_oracle(np.array([-5.0, 0.0, 1.0]), np.array([0.0, 0.5, 0.5]), np.ones(3), max_kl=None)
    np.testing.assert_allclose(s, [0.0, 1.0, 0.0])


def test_linear_law_proposal():
    law = LinearLaw(np.array([[3.0, 1.0, 2.0]]))
    np.testing.assert_allclose(propose(law, np.full(3, 1 / 3), max_proportion=0.6).proportions, [0, 0.6, 0.4])


def test_sample_mixtures_are_seeded_proportions():
    a = sample_mixtures(np.array([0.5, 0.3, 0.2]), 5, seed=7)
    assert a.shape == (5, 3) and np.allclose(a.sum(1), 1.0)
    np.testing.assert_array_equal(a, sample_mixtures(np.array([0.5, 0.3, 0.2]), 5, seed=7))


def test_capped_normalize_by_hand():
    from dataflex.mixing.laws import capped_normalize

    # w = [.6, .3, .1], cap .5 on the first: it takes .5, the other .5 splits 3:1
    p = capped_normalize(np.log([0.6, 0.3, 0.1]), np.array([0.5, 1.0, 1.0]))
    np.testing.assert_allclose(p, [0.5, 0.375, 0.125], atol=1e-15)
    # a -inf weight (outside the prior's support) stays at 0; huge log weights do not overflow
    p = capped_normalize(np.array([800.0, -np.inf, 799.0]), np.ones(3))
    np.testing.assert_allclose(p, [1 / (1 + np.exp(-1)), 0.0, np.exp(-1) / (1 + np.exp(-1))])
