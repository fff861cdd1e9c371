"""The component contract (dataflex/train/components.py): a component defined only in a user module, with its
own typed parameters, is chosen by `component._target_` under any dynamic trainer (no component=custom),
its keys are validated (unknown, wrong type, bad value) and it trains; the run context reaches constructors by
parameter name."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from mix_helpers import history, manager, mix_trainer

from dataflex.run import validate
from dataflex.train.components import build_component

USER_MODULE = '''
from dataclasses import dataclass

import numpy as np

from dataflex.train.mixer.base_mixer import Mixer


@dataclass
class FavouriteConfig:
    favourite: int = 0
    """The domain (index) that gets `share` of every batch; the others share the rest equally."""
    share: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0:
            raise ValueError(f"component.share must be in (0, 1), got {self.share}.")


class FavouriteMixer(Mixer):
    Config = FavouriteConfig

    def __init__(self, mixture_manager, config: FavouriteConfig, run_dir=None, seed=None):
        super().__init__(mixture_manager)
        self.config, self.run_dir, self.seed = config, run_dir, seed

    def mix(self, model, step_id, **kwargs):
        k = len(self.mixture_manager.names)
        p = np.full(k, (1.0 - self.config.share) / (k - 1))
        p[self.config.favourite] = self.config.share
        return p


class PlainMixer(Mixer):
    def __init__(self, mixture_manager, seed: int = 0):
        super().__init__(mixture_manager)
        self.seed = seed

    def mix(self, model, step_id, **kwargs):
        return self.mixture_manager.uniform()
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_components.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_components"


def build(target: str, **params):
    return build_component("mixer", {"_target_": target, **params}, None, mixture_manager=manager())


@pytest.mark.parametrize(
    "params, error, needle",
    [
        ({"favourit": 1}, ValueError, r"component\.favourit is not a parameter of .*FavouriteMixer"),
        ({"share": "half"}, ValueError, r"component\.share: Value .half. of type .str."),
        ({"share": 1.5}, ValueError, r"component\.share must be in \(0, 1\), got 1\.5"),
    ],
)
def test_user_component_with_typed_parameters_validates_its_keys(user_module, params, error, needle):
    with pytest.raises(error, match=needle):
        build(f"{user_module}.FavouriteMixer", **params)


def test_user_component_gets_its_config_object_and_the_context_by_name(user_module):
    mixer = build(f"{user_module}.FavouriteMixer", favourite=2, share="0.7")  # "0.7": typed by its Config
    assert mixer.config.favourite == 2 and mixer.config.share == 0.7
    np.testing.assert_allclose(mixer.mix(None, 1), [0.075, 0.075, 0.7, 0.075, 0.075])
    with pytest.raises(ValueError, match=r"component\.sed is not a parameter of .*PlainMixer.*\['seed'\]"):
        build(f"{user_module}.PlainMixer", sed=1)
    assert build(f"{user_module}.PlainMixer", seed=5).seed == 5


def test_user_component_by_target_composes_under_any_dynamic_trainer(compose, user_module):
    """No component=custom: the default component node is open, so `_target_` and `+component.<arg>` work."""
    for trainer in ("dynamic_mix", "dynamic_select", "dynamic_weight"):
        cfg = compose(
            f"trainer={trainer}", f"component._target_={user_module}.FavouriteMixer", "+component.share=0.6"
        )
        assert cfg.component._target_ == f"{user_module}.FavouriteMixer" and cfg.component.share == 0.6
    validate(compose("trainer=dynamic_mix", f"component._target_={user_module}.FavouriteMixer"))


def test_user_component_trains_and_its_proportions_govern_the_next_batches(tmp_path, user_module):
    trainer = mix_trainer(
        tmp_path,
        component={"_target_": f"{user_module}.FavouriteMixer", "favourite": 1, "share": 0.6},
        warmup_step=1,
        update_step=2,
        update_times=1,
    )
    trainer.train()
    assert trainer.mixer.run_dir == str(trainer.run_dir) and trainer.mixer.seed == trainer.args.seed
    update = history(tmp_path)["updates"][1]
    assert update["step"] == 1 and update["proportions"][1] == pytest.approx(0.6)
    counts = np.asarray(history(tmp_path)["trained_counts"])  # per step: samples per domain
    assert counts.shape == (3, 5) and counts[1:, 1].sum() == pytest.approx(0.6 * 16, abs=1)
