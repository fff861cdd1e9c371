"""dynamic_mix configs compose, and bad input fails early with a message that names the key and the fix."""

from __future__ import annotations

import pytest
from mix_helpers import NAMES, manager, mix_trainer
from omegaconf import OmegaConf

from dataflex.config.component.mix import OdmMixerConfig
from dataflex.config.trainer import DynamicMixTrainerConfig
from dataflex.train.mixer.doremi_pipeline import step_commands
from dataflex.train.mixer.odm import OdmMixer

MIXERS = ("none", "static", "random", "odm", "doremi", "dynamic_moe", "custom")


@pytest.mark.parametrize("name", MIXERS)
def test_every_mixer_option_composes(compose, name):
    cfg = compose("trainer=dynamic_mix", f"component={name}")
    assert cfg.component._target_
    args = OmegaConf.to_object(cfg.trainer)
    assert args.schedule_steps == 50 + 25 * 10


@pytest.mark.parametrize("experiment", ["doremi_step1", "doremi_step2", "doremi_step3", "mixing_study"])
def test_experiment_presets_compose(compose, experiment):
    cfg = compose(f"experiment={experiment}")
    assert cfg.trainer._target_.endswith("DynamicMixTrainer")
    if experiment == "doremi_step2":
        assert cfg.component.reference_model_path == "doremi/reference/final_model"
        assert cfg.trainer.update_step == 1 and cfg.trainer.warmup_step == 0


def test_tiny_moe_model_composes(compose):
    cfg = compose("model=tiny_moe", "model.num_experts=8")
    assert OmegaConf.to_object(cfg.model).num_experts == 8


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(mixture_sample_rule="mixture"),
            "mixture_sample_rule=mixture needs trainer.init_mixture_proportions",
        ),
        (dict(mixture_sample_rule="random"), "trainer.mixture_sample_rule='random' is unknown"),
        (
            dict(mixture_sample_rule="mixture", init_mixture_proportions=[0.5, 0.6]),
            r"sum to 1 .*does not normalise",
        ),
        (dict(mixture_sample_rule="mixture", init_mixture_proportions=[1.2, -0.2]), r"negative for \['#1'\]"),
        (dict(mixture_sample_rule="mixture", init_mixture_proportions=[0.0, 0.0]), "all zero"),
        (dict(init_mixture_proportions=[0.5, 0.5]), "only used with trainer.mixture_sample_rule=mixture"),
        (dict(static_mix=True), "static_mix=true needs trainer.train_step"),
        (dict(train_step=10), "train_step only applies with trainer.static_mix=true"),
        (dict(update_step=0), "trainer.update_step must be > 0"),
        (dict(max_steps=50), "max_steps=50 conflicts with the mix schedule of 300 steps"),
        (
            dict(mixture_sample_rule="mixture", mixture_proportions_file="/no/such.json"),
            "mixture_proportions_file",
        ),
    ],
)
def test_bad_trainer_values(overrides, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        DynamicMixTrainerConfig(**overrides)


def test_wrong_length_and_bad_values_name_the_domains(tmp_path):
    with pytest.raises(ValueError, match=r"2 values but the training data has 5 domains \['greet', 'arith'"):
        mix_trainer(
            tmp_path,
            mixture_sample_rule="mixture",
            init_mixture_proportions=[0.5, 0.5],
            static_mix=True,
            train_step=1,
        )
    trainer = mix_trainer(
        tmp_path,
        component={"_target_": "mix_helpers.CyclingMixer"},
        warmup_step=0,
        update_step=1,
        update_times=1,
    )
    trainer.setup(_fake_context(trainer))
    with pytest.raises(ValueError, match=r"noise=-0.1"):
        trainer._check_output([0.5, 0.3, 0.2, -0.1, 0.1])
    with pytest.raises(ValueError, match=r"3 proportions for 5 domains \['greet'"):
        trainer._check_output([0.5, 0.3, 0.2])


def _fake_context(trainer):
    import torch

    from dataflex.train.components import RunContext

    accelerator = type("A", (), {"device": torch.device("cpu")})()
    return RunContext(
        model=trainer.model,
        accelerator=accelerator,
        optimizer=None,
        tokenizer=trainer.tokenizer,
        train_data=trainer.train_data,
        eval_data=None,
        seed=0,
        rank=0,
        world_size=1,
        is_main=False,
        run_dir=trainer.run_dir,
        global_batch_size=8,
        total_steps=1,
        pad_token_id=0,
    )


def test_static_mix_refuses_a_mixer(tmp_path):
    with pytest.raises(ValueError, match="static_mix=true never calls a mixer.*component=none"):
        mix_trainer(
            tmp_path,
            component={"_target_": "dataflex.train.mixer.odm.OdmMixer"},
            static_mix=True,
            train_step=2,
        )


def test_odm_floor_above_one_over_k():
    with pytest.raises(ValueError, match=r"min_exploration_rate=0.3 exceeds 1/K = 0.2 .*\['greet'"):
        OdmMixer(manager(names=NAMES), OdmMixerConfig(min_exploration_rate=0.3))


@pytest.mark.slow
def test_not_a_mixer_name_lists_the_mixers(cli):
    proc = cli("trainer=dynamic_mix", "component=nonexistent", check=False)
    assert proc.returncode != 0
    for name in ("odm", "doremi", "dynamic_moe", "random", "static"):
        assert f"\t{name}" in proc.stderr


def test_doremi_pipeline_chains_the_paths(tmp_path):
    s1, s2, s3 = step_commands(tmp_path, ["model.hidden_size=32"], steps=7)
    assert s1[:2] == ["experiment=doremi_step1", f"trainer.output_dir={tmp_path / 'reference'}"]
    assert f"component.reference_model_path={tmp_path / 'reference' / 'final_model'}" in s2
    assert f"trainer.mixture_proportions_file={tmp_path / 'proxy' / 'doremi_weights.json'}" in s3
    assert "trainer.train_step=7" in s1 and "trainer.update_times=7" in s2 and "trainer.train_step=7" in s3
    assert all(s[-1] == "model.hidden_size=32" for s in (s1, s2, s3))
