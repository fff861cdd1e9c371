"""joint_update_aware's solver (DataFlex PR #58) on hand-worked numbers.

Three samples, embeddings z1 = z2 = (1, 0), z3 = (0, 1), target u = (1, 0): alignment s = (1, 1, 0) and
cosine Gram S = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]. From the uniform w0 = 1/3: S w0 = (2/3, 2/3, 1/3), so with
beta = tau = 1 one step gives softmax(s - S w0) = softmax(1/3, 1/3, -1/3) = (a, a, b) / (2a + b), a = e^(1/3),
b = e^(-1/3): the duplicated pair is pulled down from softmax(s) = (e, e, 1) / (2e + 1) (align_only).
"""

from __future__ import annotations

import math

import pytest
import torch

from dataflex.config.component.weight import JointUpdateAwareWeighterConfig
from dataflex.train.weighter.joint_update_aware import (
    joint_update_aware_weights,
    objective,
    solve_weights,
)

Z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
U = torch.tensor([1.0, 0.0], dtype=torch.float64)
A, B = math.exp(1 / 3), math.exp(-1 / 3)


def _w(**knobs) -> list[float]:
    return joint_update_aware_weights(Z, U, JointUpdateAwareWeighterConfig(**knobs)).tolist()


def test_one_fixed_point_step():
    expected = [A / (2 * A + B), A / (2 * A + B), B / (2 * A + B)]
    assert _w(beta=1.0, tau=1.0, iters=1) == pytest.approx(expected, abs=1e-12)


def test_damping_mixes_with_the_previous_weights():
    step = [A / (2 * A + B), A / (2 * A + B), B / (2 * A + B)]
    expected = [0.5 / 3 + 0.5 * x for x in step]
    assert _w(beta=1.0, tau=1.0, iters=1, damping=0.5) == pytest.approx(expected, abs=1e-12)


def test_modes():
    e = math.e
    assert _w(tau=1.0, mode="align_only") == pytest.approx(
        [e / (2 * e + 1)] * 2 + [1 / (2 * e + 1)], abs=1e-12
    )
    assert _w(mode="uniform") == pytest.approx([1 / 3] * 3)
    # diverse_only, one step: softmax(-(2/3, 2/3, 1/3)) = (b, b, 1) / (2b + 1) with b = e^(-1/3)
    assert _w(beta=1.0, tau=1.0, iters=1, mode="diverse_only") == pytest.approx(
        [B / (2 * B + 1), B / (2 * B + 1), 1 / (2 * B + 1)], abs=1e-12
    )


def test_embeddings_and_target_are_normalised():
    scaled = Z * torch.tensor([[2.0], [3.0], [5.0]], dtype=torch.float64)
    settings = JointUpdateAwareWeighterConfig(beta=1.0, tau=1.0, iters=1)
    got = joint_update_aware_weights(scaled, 7 * U, settings)
    torch.testing.assert_close(got, joint_update_aware_weights(Z, U, settings), rtol=0, atol=1e-12)


def test_converged_weights_are_the_entropic_optimum():
    gen = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(12, 5, generator=gen, dtype=torch.float64), dim=-1)
    s, gram = z @ z.mean(0), z @ z.T
    settings = JointUpdateAwareWeighterConfig(beta=0.5, tau=0.2, iters=400, damping=0.5)
    w = solve_weights(s, gram, settings)
    assert float(w.sum()) == pytest.approx(1.0) and bool((w > 0).all())
    torch.testing.assert_close(w, torch.softmax((s - 0.5 * gram @ w) / 0.2, 0), rtol=0, atol=1e-10)
    best = objective(w, s, gram, 0.5, 0.2)
    for _ in range(50):  # any other point of the simplex scores lower (the objective is strictly concave)
        other = torch.softmax(torch.randn(12, generator=gen, dtype=torch.float64), 0)
        mixed = 0.9 * w + 0.1 * other
        assert float(objective(mixed, s, gram, 0.5, 0.2)) < float(best)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="tau"):
        JointUpdateAwareWeighterConfig(tau=0)
    with pytest.raises(ValueError, match="damping"):
        JointUpdateAwareWeighterConfig(damping=0)
    with pytest.raises(ValueError, match="mode"):
        JointUpdateAwareWeighterConfig(mode="both")
