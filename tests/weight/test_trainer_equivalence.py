"""trainer=dynamic_weight: the loss scale and the update do not depend on how the global batch is split.

- uniform weights give exactly the plain mean loss (value and gradient), so nothing jumps when weighting starts;
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
    weighted = train_tiny(component(schema(name), **params), steps=3, warmup_step=1, accumulation=2, per_device=4)
    plain = train_tiny(component(schema(name), **params), steps=3, warmup_step=1, accumulation=2, per_device=4,
                       trainer_cls=plain_trainer_class())
    # the loss value of every micro-batch equals the plain mean-loss share
    for step, value, reference in weighted.loss_pairs:
        assert value == pytest.approx(reference, rel=1e-6, abs=1e-7), f"step {step}"
    assert [p[0] for p in weighted.loss_pairs] == [0, 0, 1, 1, 2, 2]
    # and so does the update, at the warmup step and at the weighted steps
    assert_same_grads(weighted.grads, plain.grads)
    assert weighted.weights[0] is None and all(torch.allclose(w, torch.full((8,), 1 / 8, dtype=w.dtype))
                                                for w in weighted.weights[1:])


def test_accumulation_1x8_equals_2x4():
    one = train_tiny(component(schema("loss"), **LINUPPER), steps=3, warmup_step=1, per_device=8, accumulation=1)
    two = train_tiny(component(schema("loss"), **LINUPPER), steps=3, warmup_step=1, per_device=4, accumulation=2)
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
    local_w = torch.cat([loss_weights(losses[:4], "linupper", 1.0, 0.3),
                         loss_weights(losses[4:], "linupper", 1.0, 0.3)]) / 2
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
