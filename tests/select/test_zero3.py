"""DeepSpeed ZeRO support of the per-sample gradient features: the helpers take the plain path for ordinary
parameters and optimizers, and under real ZeRO-3/ZeRO-2 (2 gloo processes, needs `pip install deepspeed`)
the features equal the plain single-process ones."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from select_helpers import make_setup

from dataflex.train.signals.gradients import AdamPreconditioner, num_trainable, per_sample_gradients
from dataflex.train.signals.zero3 import (
    full_adam_state,
    full_numel,
    full_shape,
    functional_forward,
    gathered,
    param_groups_by_param,
    unwrap_optimizer,
)


def _as_zero3_shard(p: torch.nn.Parameter) -> torch.nn.Parameter:
    """What a ZeRO-3 parameter looks like outside the forward: an empty tensor that knows its real shape."""
    shard = torch.nn.Parameter(torch.empty(0))
    shard.ds_id, shard.ds_shape, shard.ds_numel = 0, p.shape, p.numel()
    return shard


def test_plain_parameters_report_their_own_shape():
    p = torch.nn.Parameter(torch.zeros(3, 5))
    assert full_shape(p) == (3, 5) and full_numel(p) == 15


def test_a_zero3_shard_reports_the_full_shape_not_the_placeholder():
    linear = torch.nn.Linear(4, 6)
    full = num_trainable(linear)
    linear.weight = _as_zero3_shard(linear.weight)
    assert linear.weight.numel() == 0
    assert full_shape(linear.weight) == (6, 4)
    assert num_trainable(linear) == full == 30  # the projector's dim: full sizes, not the shards' (0 + 6)


def test_gathered_leaves_plain_parameters_alone_without_deepspeed():
    model = make_setup("full").model
    before = [p.detach().clone() for p in model.parameters()]
    with gathered(model.parameters()):  # must not need deepspeed (not installed in the main environment)
        inside = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, inside))


def test_functional_forward_of_a_plain_module_uses_the_given_parameters():
    norm = torch.nn.LayerNorm(4)
    x = torch.randn(2, 4)
    weight = torch.full((4,), 3.0)
    out = functional_forward(norm, {"weight": weight}, (x,), {})
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(x, (4,), weight, norm.bias))


def test_an_unused_zero3_shard_gets_zero_gradients_of_its_full_shape():
    s = make_setup("full")
    s.model.unused = torch.nn.Module()  # trainable, but never called in the forward
    s.model.unused.register_parameter("w", _as_zero3_shard(torch.nn.Parameter(torch.ones(2, 3))))
    grads = {n: g for n, _, g in per_sample_gradients(s.model, s.batch([0, 1]))}
    assert grads["unused.w"].shape == (2, 2, 3) and not grads["unused.w"].any()


def test_plain_optimizer_groups_and_state():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([{"params": [a]}, {"params": [b], "betas": (0.5, 0.6)}], lr=0.1)
    groups = param_groups_by_param(opt)
    assert groups[id(a)]["betas"] == (0.9, 0.999) and groups[id(b)]["betas"] == (0.5, 0.6)
    assert full_adam_state(opt, a) == (None, None, 0.0)  # before the first step
    (a.sum() * 2 + b.sum()).backward()
    opt.step()
    m, v, step = full_adam_state(opt, a)
    assert m is opt.state[a]["exp_avg"] and v is opt.state[a]["exp_avg_sq"] and step == 1.0


def test_deepspeed_optimizers_map_model_parameters_to_their_groups():
    """ZeRO's `param_groups` hold flat fp32 partitions; the model parameters are found through its groups."""
    a, b, c = (torch.nn.Parameter(torch.ones(1)) for _ in range(3))
    groups = [{"betas": (0.9, 0.99)}, {"betas": (0.8, 0.88)}]
    zero12 = SimpleNamespace(
        bit16_groups=[[a, b], [c]], param_groups=groups, optimizer="flat inner optimizer"
    )
    assert [param_groups_by_param(zero12)[id(p)]["betas"] for p in (a, b, c)] == [(0.9, 0.99)] * 2 + [
        (0.8, 0.88)
    ]
    zero3 = SimpleNamespace(
        fp16_groups=[[a], [b], [c]], sub_group_to_group_id={0: 0, 1: 1, 2: 1}, param_groups=groups
    )
    assert [param_groups_by_param(zero3)[id(p)]["betas"] for p in (a, b, c)] == [(0.9, 0.99)] + [
        (0.8, 0.88)
    ] * 2
    # accelerate's wrapper is unwrapped, a ZeRO optimizer is not (its `.optimizer` is the flat one)
    assert (
        unwrap_optimizer(SimpleNamespace(optimizer=zero12)) is zero12 and unwrap_optimizer(zero12) is zero12
    )


def test_adam_preconditioner_reads_the_state_once_per_parameter(monkeypatch):
    """Linear weights arrive in row pieces; under DeepSpeed each read is a collective, so it happens once."""
    import dataflex.train.signals.gradients as gradients

    p = torch.nn.Parameter(torch.ones(4, 3))
    opt = torch.optim.AdamW([p])
    calls = []
    monkeypatch.setattr(gradients, "full_adam_state", lambda o, q: calls.append(q) or (None, None, 0.0))
    pre = AdamPreconditioner(opt)
    for start in (0, 6):
        pre(p, torch.ones(2, 6), start)
    assert len(calls) == 1


class _CountingModel(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, **kwargs):
        self.calls += 1
        return self.model(**kwargs)


def test_lockstep_evaluation_runs_as_many_batches_on_every_rank_and_drops_the_extras():
    """Under ZeRO-3 every forward is a collective: a rank with fewer eval rows must still run as many
    batches."""
    from dataflex.train.evaluation import evaluate

    s = make_setup("full")
    kw = dict(batch_size=1, pad_token_id=s.pad, device="cpu", world_size=2, max_per_domain=1)  # 5 rows: 3 + 2
    results = {}
    for lockstep in (False, True):
        for rank in (0, 1):
            model = _CountingModel(s.model)
            results[lockstep, rank] = (
                evaluate(model, s.eval, rank=rank, lockstep=lockstep, **kw),
                model.calls,
            )
    assert [results[False, r][1] for r in (0, 1)] == [3, 2]
    assert [results[True, r][1] for r in (0, 1)] == [3, 3]
    for rank in (0, 1):  # the extra row is computed but not counted (single process: no all-reduce)
        assert results[True, rank][0] == pytest.approx(results[False, rank][0])


def test_lockstep_sharding_gives_every_rank_the_longest_shard_and_keeps_its_own_rows():
    from dataflex.train.selector.scoring import sharded

    s = make_setup("full")
    ids = np.arange(10, 15)  # shards of 3 and 2
    seen = []

    def fn(shard):
        seen.append(len(shard))
        return torch.as_tensor(shard, dtype=torch.float32)[:, None] * 2

    plain = sharded(fn, ids, s.context(world_size=2, rank=1))
    locked = sharded(fn, ids, s.context(world_size=2, rank=1, lockstep=True))
    assert seen == [2, 3]
    assert torch.equal(plain, locked) and plain[:, 0].tolist() == [26.0, 28.0]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [3, 2])
def test_zero_features_equal_the_plain_ones(stage, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # spawned ranks inherit it: DeepSpeed's CPU accelerator, gloo
    pytest.importorskip(
        "deepspeed", reason="needs DeepSpeed (pip install deepspeed); the main environment has none"
    )
    from deepspeed_helpers import plain_features, zero_features

    from distributed_utils import run_distributed

    plain = plain_features()
    ranks = run_distributed(zero_features, 2, stage, timeout=300)  # a rank out of lockstep would hang
    for rank in ranks:
        assert rank["sharded"] == (stage == 3)
        for key in ("sgd", "adam", "projected", "less_rows", "kronecker"):
            err = ((rank[key] - plain[key]).norm(dim=1) / plain[key].norm(dim=1)).max()
            assert err < 1e-4, (key, float(err))
