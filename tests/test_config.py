"""Every config option composes; bad keys, types, options and values fail early with a named culprit."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from dataflex.config.paths import config_dir
from dataflex.run import validate

CONF = config_dir()


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _trainer_components() -> list[tuple[str, str]]:
    return [
        (t.name, p.stem)
        for t in sorted((CONF / "components").iterdir())
        if t.is_dir()
        for p in sorted(t.glob("*.yaml"))
    ]


@pytest.mark.parametrize("group", ["trainer", "data", "model", "logger"])
def test_every_group_option_composes(compose, group):
    options = _options(group)
    assert options, f"no options in conf/{group}"
    for option in options:
        overrides = [f"{group}={option}"]
        if option == "hf":
            overrides.append("model.name_or_path=/some/model")
        if option == "custom" and group == "data":
            overrides.append("data.dataset=/some/dataset_info.yaml")
        cfg = compose(*overrides)
        assert cfg[group]["_target_"], f"{group}={option} has no _target_"


@pytest.mark.parametrize("trainer,component", _trainer_components())
def test_every_component_composes_under_its_trainer(compose, trainer, component):
    cfg = compose(f"trainer={trainer}", f"component={component}")
    assert cfg.trainer._target_
    if component != "none":
        assert cfg.component._target_


def test_every_component_name_has_a_marker():
    names = {c for _, c in _trainer_components()}
    assert names <= set(_options("component")), "conf/component/<name>.yaml missing for some implementation"


def test_default_config_is_typed(compose):
    cfg = compose()
    assert cfg.trainer.learning_rate == pytest.approx(3e-3)
    assert cfg.data.dataset == "embedded://default"
    assert cfg.model._target_.endswith("build_tiny_model")


@pytest.mark.parametrize(
    "override,needle",
    [
        ("trainer.warmup_stpe=3", "warmup_stpe"),
        ("trainer.learning_rate=abc", "trainer.learning_rate"),
        ("data.cutof_len=3", "cutof_len"),
        ("model.hidden_size=big", "model.hidden_size"),
        ("trainer=no_such_trainer", "no_such_trainer"),
        ("model=no_such_model", "no_such_model"),
    ],
)
def test_compose_time_errors_name_the_culprit(compose, override, needle):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)) as err:
        compose(override)
    text = str(err.value) + str(err.value.__cause__ or "")
    assert needle in text


@pytest.mark.parametrize(
    "override,needle",
    [
        ("data.cutoff_len=0", "data.cutoff_len"),
        ("data.cutoff_len=-5", "data.cutoff_len"),
        ("trainer.per_device_train_batch_size=0", "trainer.per_device_train_batch_size"),
        ("trainer.gradient_accumulation_steps=0", "trainer.gradient_accumulation_steps"),
        ("trainer.lr_scheduler_type=wavy", "trainer.lr_scheduler_type"),
        ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio"),
    ],
)
def test_validation_errors_name_the_key(compose, override, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        validate(compose(override))


def test_missing_model_dir_fails_before_loading(compose, tmp_path, monkeypatch):
    import transformers

    def _boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", _boom)
    missing = tmp_path / "no_model_here"
    with pytest.raises(FileNotFoundError, match="model.name_or_path"):
        validate(compose("model=hf", f"model.name_or_path={missing}"))
    with pytest.raises(ValueError, match="model.name_or_path is not set"):
        validate(compose("model=hf"))


@pytest.mark.parametrize(
    "option,strategy",
    [("ddp", "ddp"), ("deepspeed_zero2", "deepspeed"), ("deepspeed_zero3", "deepspeed"), ("fsdp", "fsdp")],
)
def test_dist_options_compose_and_validate(compose, option, strategy):
    from dataflex.config.dist import DistConfig

    cfg = compose(f"dist={option}")
    dist = DistConfig(**cfg.dist)
    assert dist.strategy == strategy
    if option == "deepspeed_zero3":
        assert dist.zero_stage == 3


def test_fsdp_config_builds_the_accelerate_plugin():
    from dataflex.config.dist import DistConfig, accelerator_plugins

    plugin = accelerator_plugins(DistConfig(strategy="fsdp"), max_grad_norm=1.0)["fsdp_plugin"]
    assert "FULL_SHARD" in str(plugin.sharding_strategy)


def test_deepspeed_plugin_carries_the_micro_batch_and_no_clipping_when_off():
    """Without them accelerate's `prepare` refuses (no dataloader gives the batch size) and clips at 1.0."""
    from dataflex.config.dist import DistConfig, accelerator_plugins

    plugin = accelerator_plugins(
        DistConfig(strategy="deepspeed", zero_stage=3), max_grad_norm=0.0, micro_batch_size=4
    )["deepspeed_plugin"]
    ds = plugin.deepspeed_config
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_clipping"] == 0.0
    assert ds["gradient_accumulation_steps"] == 1  # the loop accumulates; DeepSpeed must not divide again
    assert ds["zero_optimization"]["stage"] == 3


def test_bad_dist_values_name_the_key(compose):
    with pytest.raises(ValueError, match="dist.zero_stage"):
        validate(compose("dist=deepspeed_zero3", "dist.zero_stage=4"))
    with pytest.raises(ValueError, match="launcher.nproc_per_node"):
        validate(compose("launcher.nproc_per_node=0"))
