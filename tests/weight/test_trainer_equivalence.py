"""trainer=dynamic_weight: the loss scale and the update do not depend on how the global batch is split.

- uniform weights give exactly the plain mean loss (value and gradient), so nothing jumps when weighting
starts;
- global-batch normalisation: gradient accumulation 1x8 vs 2x4, and 1 vs 2 gloo processes, apply the same
  gradient and the same weights (the weights are far from uniform, so this is not trivially true).
"""

from __future__ import annotations

import pytest
import torch
from weight_helpers import component, distributed_train, recording_trainer_class, schema, train_tiny

from dataflex.train.trainer.base import BaseTrainer

from distributed_utils import run_distributed

LINUPPER = {"strategy": "linupper", "temperature": 0.3}


def assert_same_grads(a, b, tol=1e-5):
    """Same gradient at every step up to float summation order: ||a - b|| <= tol * ||b||."""
    assert len(a) == len(b)
    for step, (ga, gb) in enumerate(zip(a, b)):
        err = float((ga - gb).norm() / gb.norm())
        assert err <= tol, f"step {step}: relative gradient difference {err:.2e} > {tol:.0e}"


def plain_trainer_class():
    """The same recording trainer, but every step uses the base class's plain mean loss."""
    base = recording_trainer_class()

    class Plain(base):
        def weighting(self, step):
            return False

        def compute_loss(self, losses, batch, ctx):
            loss = BaseTrainer.compute_loss(self, losses, batch, ctx)
            self.loss_pairs.append((ctx.step, float(loss.detach()), float(loss.detach())))
            return loss

    return Plain


@pytest.mark.parametrize("name, params", [("custom", {}), ("loss", {"strategy": "uniform"})])
def test_uniform_weights_reproduce_the_plain_mean_loss(name, params):
    weighted = train_tiny(
        component(schema(name), **params), steps=3, warmup_step=1, accumulation=2, per_device=4
    )
    plain = train_tiny(
        component(schema(name), **params),
        steps=3,
        warmup_step=1,
        accumulation=2,
        per_device=4,
        trainer_cls=plain_trainer_class(),
    )
    # the loss value of every micro-batch equals the plain mean-loss share
    for step, value, reference in weighted.loss_pairs:
        assert value == pytest.approx(reference, rel=1e-6, abs=1e-7), f"step {step}"
    assert [p[0] for p in weighted.loss_pairs] == [0, 0, 1, 1, 2, 2]
    # and so does the update, at the warmup step and at the weighted steps
    assert_same_grads(weighted.grads, plain.grads)
    assert weighted.weights[0] is None and all(
        torch.allclose(w, torch.full((8,), 1 / 8, dtype=w.dtype)) for w in weighted.weights[1:]
    )


@pytest.mark.parametrize("name, params", [("custom", {}), ("loss", {"strategy": "uniform"})])
def test_uniform_weights_under_token_reduction_reproduce_trainer_static(name, params):
    """Issue 13 item 7: with trainer.loss_reduction=token (trainer=static's loss) uniform weights give exactly
    the static token-mean loss and update, through Sow et al.'s length-normalised form."""
    kw = dict(steps=3, warmup_step=1, accumulation=2, per_device=4, loss_reduction="token")
    weighted = train_tiny(component(schema(name), **params), **kw)
    plain = train_tiny(component(schema(name), **params), trainer_cls=plain_trainer_class(), **kw)
    assert [p[0] for p in weighted.loss_pairs] == [p[0] for p in plain.loss_pairs] == [0, 0, 1, 1, 2, 2]
    for (step, value, _), (_, static, _) in zip(weighted.loss_pairs, plain.loss_pairs):
        assert value == pytest.approx(static, rel=1e-6, abs=1e-7), f"step {step}"
    assert_same_grads(weighted.grads, plain.grads)
    lengths = [w for w in weighted.weights[1:]]
    assert not all(
        torch.allclose(w, torch.full((8,), 1 / 8, dtype=w.dtype)) for w in lengths
    )  # length-weighted


def test_length_weighted_form_on_fixed_numbers():
    """Sow et al.'s trainer: loss = sum_i w_i * (n_i / sum n) * l_i * N. w = [.5, .25, .25], n = [2, 1, 1]:
    effective weights [.5*3*.5, .25*3*.25, .25*3*.25] = [.75, .1875, .1875]."""
    from dataflex.train.trainer.dynamic_weight import length_weighted

    out = length_weighted(torch.tensor([0.5, 0.25, 0.25]), torch.tensor([2, 1, 1]))
    torch.testing.assert_close(out, torch.tensor([0.75, 0.1875, 0.1875]))
    uniform = length_weighted(torch.full((3,), 1 / 3), torch.tensor([2, 1, 1]))
    torch.testing.assert_close(uniform, torch.tensor([0.5, 0.25, 0.25]))  # = n_i / sum n: the token mean


def test_accumulation_1x8_equals_2x4():
    one = train_tiny(
        component(schema("loss"), **LINUPPER), steps=3, warmup_step=1, per_device=8, accumulation=1
    )
    two = train_tiny(
        component(schema("loss"), **LINUPPER), steps=3, warmup_step=1, per_device=4, accumulation=2
    )
    w = one.weights[2]
    assert float(w.max() / w.min()) > 3.0  # really non-uniform: per-micro-batch normalisation would differ
    for a, b in zip(one.weights[1:], two.weights[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    assert_same_grads(one.grads, two.grads)


def test_weighted_loss_differs_from_per_micro_batch_normalisation():
    """Negative control: normalising each micro-batch of 4 separately would give other weights."""
    from dataflex.train.weighter.loss_weighter import loss_weights

    losses = torch.tensor([5.1, 6.0, 6.2, 7.9, 5.0, 5.5, 8.3, 6.6])
    global_w = loss_weights(losses, "linupper", 1.0, 0.3)
    local_w = (
        torch.cat(
            [loss_weights(losses[:4], "linupper", 1.0, 0.3), loss_weights(losses[4:], "linupper", 1.0, 0.3)]
        )
        / 2
    )
    assert not torch.allclose(global_w, local_w, atol=1e-3)


@pytest.mark.slow
def test_one_process_equals_two_gloo_processes():
    specs = [("loss", LINUPPER), ("adapt", {"tau": 0.02, "refresh_interval": 2, "max_anchors": 16})]
    ranks = run_distributed(distributed_train, 2, specs, 3, 1, 4)
    single = distributed_train(specs, 3, 1, 8)
    for k, (name, _) in enumerate(specs):
        r0, r1, one = ranks[0][k], ranks[1][k], single[k]
        assert (r0["world_size"], r1["world_size"], one["world_size"]) == (2, 2, 1), name
        assert_same_grads(r0["grads"], r1["grads"], tol=0.0)  # ranks apply identical updates
        assert_same_grads(r0["grads"], one["grads"])
        for a, b in zip(r0["weights"][1:], one["weights"][1:]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7, msg=name)
        assert float(one["weights"][2].max() / one["weights"][2].min()) > 1.05, name
