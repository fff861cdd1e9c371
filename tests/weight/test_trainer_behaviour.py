"""trainer=dynamic_weight: warmup/weighting schedule, visible weights, NaN handling, the spec's custom
weighter from a user module, bad component output, state."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf
from weight_helpers import component, recording_trainer_class, schema, train_tiny

from dataflex.train.components import build_component, check_component
from dataflex.train.trainer.dynamic_weight import NonFiniteLossError
from dataflex.train.weighter.base_weighter import Weighter

LINUPPER = {"strategy": "linupper", "temperature": 0.3}


def build_weighter(cfg, provided):
    return build_component("weighter", cfg, None, **provided)


def check_component_config(cfg):
    check_component("weighter", cfg)


@pytest.fixture(scope="module")
def linupper_run():
    return train_tiny(component(schema("loss"), **LINUPPER), steps=4, warmup_step=2, logging_steps=2)


def test_warmup_steps_are_plain_then_every_step_is_weighted(linupper_run):
    t = linupper_run
    assert [w is None for w in t.weights] == [True, True, False, False]
    assert [m["weight/active"] for m in t.metrics] == [0.0, 0.0, 1.0, 1.0]
    for step, value, plain in t.loss_pairs:
        if step < 2:
            assert value == pytest.approx(plain, rel=1e-6)
    assert any(abs(v - p) > 1e-4 for s, v, p in t.loss_pairs if s >= 2)  # weighting changed the loss


def test_weight_metrics_every_step_and_values_at_logging_steps(linupper_run):
    t = linupper_run
    names = t.train_data.domain_names
    for done, m in enumerate(t.metrics, start=1):
        for key in ("weight/min", "weight/max", "weight/entropy", "weight/ess"):
            assert math.isfinite(m[key]), (done, key)
        assert any(k.startswith("weight/domain_mean/") and k.split("/")[-1] in names for k in m)
        assert ("weight/values" in m) == (done % 2 == 0)
    warm, weighted = t.metrics[0], t.metrics[2]
    assert warm["weight/min"] == warm["weight/max"] == 1.0 and warm["weight/ess"] == pytest.approx(8)
    assert weighted["weight/min"] < 1.0 < weighted["weight/max"] and weighted["weight/ess"] < 8
    assert weighted["weight/temperature"] == 0.3
    w = t.weights[2]
    values = t.metrics[3]["weight/values"]
    assert len(values) == 8 and sum(values) == pytest.approx(8, rel=1e-4)
    p = w / w.sum()
    assert weighted["weight/entropy"] == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)
    assert weighted["weight/ess"] == pytest.approx(float(1 / (p * p).sum()), rel=1e-6)


def test_domain_mean_weights_average_relative_weights():
    from dataflex.train.weighter.stats import weight_stats

    m = weight_stats(
        torch.tensor([0.1, 0.3, 0.2, 0.4]), torch.tensor([0, 1, 0, 1]), ["a", "b"], with_values=True
    )
    assert m["weight/domain_mean/a"] == pytest.approx(0.6) and m["weight/domain_mean/b"] == pytest.approx(1.4)
    assert m["weight/values"] == pytest.approx([0.4, 1.2, 0.8, 1.6])
    assert m["weight/min"] == pytest.approx(0.4) and m["weight/max"] == pytest.approx(1.6)


def nan_trainer_class(poison_step: int):
    """Makes sample row 1 of the first micro-batch NaN at `poison_step` (through the decoder's final hidden
    states, which both the plain and the chunked loss read)."""
    base = recording_trainer_class()

    class Poisoned(base):
        def setup(self, loop):
            super().setup(loop)
            self.batches = {}

            def hook(module, args, output):
                if module.training and self._step == poison_step and not self._poisoned:
                    self._poisoned = True
                    output.last_hidden_state.data[1] = float("nan")

            self._poisoned = False
            loop.accelerator.unwrap_model(loop.model).get_decoder().register_forward_hook(hook)

        def next_indices(self, step, n):
            self.batches[step] = super().next_indices(step, n)
            return self.batches[step]

    return Poisoned


def test_nan_loss_is_a_clear_error_naming_step_and_samples():
    with pytest.raises(NonFiniteLossError) as err:
        train_tiny(
            component(schema("loss"), **LINUPPER), steps=3, warmup_step=1, trainer_cls=nan_trainer_class(1)
        )
    message = str(err.value)
    assert "step 1" in message and "sample ids [" in message


def test_nan_loss_with_skip_step_policy_drops_the_update():
    t = train_tiny(
        component(schema("loss"), **LINUPPER),
        steps=3,
        warmup_step=1,
        nan_policy="skip_step",
        trainer_cls=nan_trainer_class(1),
    )
    assert t.summary["skipped_steps"] == 1 and len(t.grads) == 2  # the optimizer never saw step 1
    assert t.weighter.updates == 1  # the skipped step did not advance the weighter's schedule


SPEC_WEIGHTER = textwrap.dedent("""
    from dataflex.core.registry import register_weighter
    from dataflex.utils.logging import logger
    from typing import Any, Union
    from torch import nn
    import torch
    from dataflex.train.weighter.base_weighter import Weighter

    @register_weighter("custom")
    class CustomWeighter(Weighter):
        def __init__(self, strategy: str = "uniform", **kwargs):
            super().__init__(**kwargs)
            self.strategy = strategy
            logger.info(f"CustomWeighter initialized with strategy: {strategy}")

        def get_weighted_loss(
            self,
            losses: torch.Tensor,
            *,
            ctx: Any = None,
            model: nn.Module | None = None,
            inputs: dict[str, Union[torch.Tensor, Any]] | None = None,
        ) -> torch.Tensor:
            if not torch.is_tensor(losses) or losses.dim() == 0:
                return losses
            weights = torch.ones_like(losses) / losses.numel()
            weighted_loss = torch.sum(weights * losses)
            return weighted_loss
""")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """The spec's CustomWeighter in a user package outside DataFlex (its relative base-class import made
    absolute, which a module outside the package needs)."""
    (tmp_path / "my_weighters.py").write_text(SPEC_WEIGHTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_weighters"
    sys.modules.pop("my_weighters", None)
    from dataflex.core.registry import REGISTRY
    from dataflex.train.weighter.custom_weighter import CustomWeighter

    REGISTRY["weighter"]["custom"] = CustomWeighter


def test_spec_custom_weighter_from_a_user_module_by_target(user_module):
    comp = component(schema("custom"))
    comp._target_ = f"{user_module}.CustomWeighter"
    t = train_tiny(comp, steps=2, warmup_step=1)
    assert type(t.weighter).__module__ == user_module
    torch.testing.assert_close(t.weights[1], torch.full((8,), 1 / 8, dtype=torch.float64))


def test_registered_custom_weighter_is_the_packaged_one():
    from dataflex.core.registry import get_component
    from dataflex.train.weighter.custom_weighter import CustomWeighter

    assert get_component("weighter", "custom") is CustomWeighter
    assert build_weighter(component(schema("custom")), {}).strategy == "uniform"


class NotDifferentiable(Weighter):
    def get_weighted_loss(self, losses, *, ctx=None, model=None, inputs=None):
        return losses.detach().mean()


class NotScalar(Weighter):
    def get_weighted_loss(self, losses, *, ctx=None, model=None, inputs=None):
        return losses * 2


@pytest.mark.parametrize(
    "cls, error, match",
    [
        (NotDifferentiable, ValueError, "does not depend on `losses`"),
        (NotScalar, TypeError, "must return a scalar tensor"),
    ],
)
def test_bad_weighter_output_is_a_clear_error(cls, error, match):
    comp = OmegaConf.create({"_target_": f"{__name__}.{cls.__name__}"})
    with pytest.raises(error, match=match):
        train_tiny(comp, steps=2, warmup_step=1)


def test_component_problems_fail_before_training():
    with pytest.raises(ValueError, match="needs a weighter"):
        build_weighter(None, {})
    with pytest.raises(ValueError, match="component.delta"):
        check_component_config(component(schema("loss"), delta=0.0))
    with pytest.raises(ValueError, match="linupper"):
        check_component_config(component(schema("loss"), strategy="nope"))
    bad = component(schema("custom"))
    bad._target_ = "torch.nn.Linear"
    with pytest.raises(TypeError, match="not a subclass"):
        build_weighter(bad, {})
    bad._target_ = "no_such_module.Thing"
    with pytest.raises(ImportError, match="component._target_=no_such_module.Thing"):
        build_weighter(bad, {})


def test_trainer_state_carries_the_weighter_state(linupper_run):
    state = linupper_run.state_dict()
    assert state["weighter"] == {"updates": 2} and state["sampler"] is not None
    restored = build_weighter(component(schema("loss"), **LINUPPER), {})
    restored.load_state_dict(state["weighter"])
    assert restored.updates == 2
