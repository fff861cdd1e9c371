"""`component=loss` (Sow et al., ICLR 2025): parity with the paper's update rule on fixed numbers, the
temperature schedule and its state, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dataflex.config.component.weight import LossWeighterConfig
from dataflex.train.weighter.loss_weighter import (
    LossWeighter,
    loss_weights,
    normalize_losses,
    scheduled_temperature,
)

LOSSES = torch.tensor([1.0, 2.0, 3.0, 5.0])
# Step 1 by hand: min 1, max 5, delta 1 -> h = 2l/4 - (5+1)/4 = l/2 - 1.5
H = [-1.0, -0.5, 0.0, 1.0]
# Step 2 by hand, per strategy (delta = 1)
F = {
    "linupper": [0.0, 0.5, 1.0, 1.0],  # min(h + 1, 1)
    "quadratic": [0.0, 0.75, 1.0, 0.0],  # 1 - h^2
    "extremes": [1.0, 0.5, 0.0, 1.0],  # |h|
    "uniform": [0.0, 0.0, 0.0, 0.0],
}


def softmax(f, r):
    e = np.exp(np.asarray(f) / r)
    return e / e.sum()


def test_normalisation_maps_batch_onto_minus_delta_delta():
    assert normalize_losses(LOSSES, 1.0).tolist() == pytest.approx(H)
    assert normalize_losses(LOSSES, 2.5).tolist() == pytest.approx([2.5 * h for h in H])


@pytest.mark.parametrize("strategy", sorted(F))
@pytest.mark.parametrize("r", [1.0, 0.25])
def test_weights_match_paper_rule_on_fixed_losses(strategy, r):
    w = loss_weights(LOSSES, strategy, delta=1.0, temperature=r)
    np.testing.assert_allclose(w.numpy(), softmax(F[strategy], r), rtol=1e-6)
    assert float(w.sum()) == pytest.approx(1.0)


def test_linupper_hand_numbers():
    # exp([0, .5, 1, 1]) / sum = [1, 1.64872, 2.71828, 2.71828] / 8.08528
    w = loss_weights(LOSSES, "linupper", 1.0, 1.0)
    assert w.tolist() == pytest.approx([0.123681, 0.203917, 0.336201, 0.336201], abs=1e-6)


def test_delta_scales_scores_consistently():
    # quadratic with delta=2: h doubles, h^2/delta^2 unchanged -> same weights as delta=1
    np.testing.assert_allclose(
        loss_weights(LOSSES, "quadratic", 2.0, 1.0).numpy(),
        loss_weights(LOSSES, "quadratic", 1.0, 1.0).numpy(),
        rtol=1e-6,
    )
    # linupper with delta=2 at r=2 equals delta=1 at r=1 (f scales with delta)
    np.testing.assert_allclose(
        loss_weights(LOSSES, "linupper", 2.0, 2.0).numpy(),
        loss_weights(LOSSES, "linupper", 1.0, 1.0).numpy(),
        rtol=1e-6,
    )


def test_equal_losses_give_uniform_weights():
    for strategy in F:
        w = loss_weights(torch.full((6,), 2.3), strategy, 1.0, 0.1)
        np.testing.assert_allclose(w.numpy(), np.full(6, 1 / 6), rtol=1e-6)


def test_uniform_strategy_reproduces_mean_loss():
    x = torch.tensor([0.3, 4.0, 1.7, 2.2, 9.0], requires_grad=True)
    loss = LossWeighter(LossWeighterConfig(strategy="uniform")).get_weighted_loss(x)
    assert float(loss.detach()) == pytest.approx(float(x.detach().mean()), rel=1e-6)
    (g,) = torch.autograd.grad(loss, x)
    np.testing.assert_allclose(g.numpy(), np.full(5, 0.2), rtol=1e-6)


def test_weights_are_stop_gradient():
    """d(sum w_i l_i)/dl_i = w_i: the weights themselves are not differentiated (as in the paper)."""
    x = LOSSES.clone().requires_grad_(True)
    loss = LossWeighter(LossWeighterConfig(strategy="linupper", temperature=0.5)).get_weighted_loss(x)
    (g,) = torch.autograd.grad(loss, x)
    np.testing.assert_allclose(g.numpy(), softmax(F["linupper"], 0.5), rtol=1e-6)


def test_temperature_schedules():
    assert scheduled_temperature(0, 1.0, "constant", 100.0, 10) == 1.0
    assert [scheduled_temperature(n, 1.0, "step", 100.0, 3) for n in range(5)] == [
        100.0,
        100.0,
        100.0,
        1.0,
        1.0,
    ]
    assert [scheduled_temperature(n, 1.0, "linear", 101.0, 4) for n in range(6)] == [
        101.0,
        76.0,
        51.0,
        26.0,
        1.0,
        1.0,
    ]


def test_schedule_advances_per_weighted_step_and_resumes_from_state():
    a = LossWeighter(
        LossWeighterConfig(
            temperature=0.5, temperature_schedule="step", temperature_start=50.0, temperature_warmup_steps=2
        )
    )
    seen = []
    for _ in range(3):
        a.get_weighted_loss(LOSSES.clone().requires_grad_(True))
        seen.append(a.metrics()["temperature"])
    assert seen == [50.0, 50.0, 0.5]
    b = LossWeighter(
        LossWeighterConfig(
            temperature=0.5, temperature_schedule="step", temperature_start=50.0, temperature_warmup_steps=2
        )
    )
    b.load_state_dict(a.state_dict())
    x = LOSSES.clone().requires_grad_(True)
    assert float(b.get_weighted_loss(x).detach()) == pytest.approx(float(a.get_weighted_loss(x).detach()))
    assert b.metrics()["temperature"] == 0.5 and b.state_dict() == {"updates": 4}


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"delta": 0.0}, "component.delta"),
        ({"delta": -1.0}, "component.delta"),
        ({"temperature": 0.0}, "component.temperature"),
        ({"temperature_start": -2.0}, "component.temperature_start"),
        ({"temperature_schedule": "cosine"}, "component.temperature_schedule"),
        ({"temperature_warmup_steps": -1}, "component.temperature_warmup_steps"),
    ],
)
def test_bad_parameters_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        LossWeighter(LossWeighterConfig(**kwargs))


def test_unknown_strategy_lists_the_strategies():
    with pytest.raises(ValueError) as err:
        LossWeighter(LossWeighterConfig(strategy="hardest"))
    for name in ("linupper", "uniform", "quadratic", "extremes"):
        assert name in str(err.value)


def test_unknown_parameter_is_rejected():
    with pytest.raises(TypeError, match="unknown parameter"):
        LossWeighter(temprature=1.0)


def test_sharper_temperature_concentrates_weights():
    x = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0])
    ess = [1 / float((loss_weights(x, "linupper", 1.0, r) ** 2).sum()) for r in (10.0, 1.0, 0.1)]
    assert ess[0] > ess[1] > ess[2] and math.isclose(ess[0], 5, rel_tol=0.05)
