"""trainer=dynamic_weight through `dataflex-run`: composition, early errors, weights in metrics.jsonl, the
spec's CustomWeighter by registered name and from a user module, and the weighting_study preset."""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from functools import partial
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dataflex.run import validate
from dataflex.train.components import check_component

from helpers import FAST, PLOTTED

check_component_config = partial(check_component, "weighter")

WEIGHT = ("trainer=dynamic_weight", "trainer.warmup_step=2")


def metrics_of(root: Path) -> list[dict]:
    (path,) = list(root.rglob("metrics.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "name, target",
    [
        ("loss", "LossWeighter"),
        ("adapt", "AdaptWeighter"),
        ("custom", "CustomWeighter"),
        ("rho1", "Rho1Weighter"),
    ],
)
def test_each_weighter_composes_under_dynamic_weight(compose, name, target):
    cfg = compose("trainer=dynamic_weight", f"component={name}")
    assert cfg.trainer._target_.endswith("DynamicWeightTrainer")
    assert cfg.component._target_.endswith(target)


def test_missing_component_names_the_weighters(compose):
    cfg = compose("trainer=dynamic_weight")
    with pytest.raises(ValueError, match=re.escape("needs a weighter: add component=loss|adapt|custom|rho1")):
        check_component_config(cfg.component)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (("trainer.warmup_step=300",), "trainer.warmup_step"),
        (("trainer.train_step=10", "trainer.warmup_step=10"), "trainer.warmup_step"),
        (("trainer.loss_reduction=tokens",), "trainer.loss_reduction"),
        (("trainer.warmup_step=-1",), "trainer.warmup_step"),
    ],
)
def test_bad_trainer_values_fail_validation(compose, overrides, key):
    cfg = compose("trainer=dynamic_weight", "component=loss", *overrides)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (("component=loss", "component.delta=0"), "component.delta"),
        (("component=loss", "component.temperature=-1"), "component.temperature"),
        (("component=loss", "component.strategy=hardest"), "component.strategy"),
        (("component=adapt", "component.tau=0"), "component.tau"),
        (("component=rho1",), "component.reference_model"),
    ],
)
def test_bad_component_values_name_the_key(compose, overrides, key):
    cfg = compose("trainer=dynamic_weight", *overrides)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_component_config(cfg.component)


def test_train_step_is_the_total_including_warmup(compose):
    cfg = compose("trainer=dynamic_weight", "component=loss", "trainer.train_step=7", "trainer.warmup_step=3")
    args = OmegaConf.to_object(cfg.trainer)
    assert args.max_steps == 7 and args.warmup_step == 3


def test_weighting_study_preset_sweeps_five_methods(compose):
    cfg = compose("experiment=weighting_study", return_hydra_config=True)
    assert cfg.hydra.sweeper.params["+experiment/weighting"] == "uniform,linupper,quadratic,extremes,adapt"
    assert cfg.trainer._target_.endswith("DynamicWeightTrainer") and cfg.trainer.max_steps == 300
    for method in ("uniform", "linupper", "quadratic", "extremes", "adapt"):
        job = compose("experiment=weighting_study", f"+experiment/weighting={method}")
        if method == "adapt":
            assert job.component._target_.endswith("AdaptWeighter") and list(
                job.component.anchor_domains
            ) == ["target"]
        else:
            assert job.component.strategy == method
        check_component_config(job.component)
    first = Path(__file__).resolve().parents[2] / "conf/experiment/weighting_study.yaml"
    assert first.read_text().splitlines()[1].startswith("# dataflex-run -m experiment=weighting_study")


@pytest.mark.slow
def test_loss_weighter_run_logs_weights(cli, tmp_path):
    cli(*WEIGHT, "component=loss", "component.temperature=0.5", *PLOTTED)
    records = [r for r in metrics_of(tmp_path) if "weight/min" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["weight/active"] for r in records] == [0.0, 0.0, 1.0, 1.0]
    weighted = records[-1]
    assert weighted["weight/min"] < 1.0 < weighted["weight/max"] and weighted["weight/ess"] < 4
    assert len(weighted["weight/values"]) == 4 and math.isclose(
        sum(weighted["weight/values"]), 4, rel_tol=1e-4
    )
    assert any(k.startswith("weight/domain_mean/") for k in weighted)
    assert list(tmp_path.rglob("plots/weight_histograms.png"))


@pytest.mark.slow
def test_spec_custom_weighter_by_name_and_from_user_module(cli, tmp_path):
    cli(*WEIGHT, "component=custom", *FAST)
    weighted = [r for r in metrics_of(tmp_path) if r.get("weight/active") == 1.0]
    assert weighted and all(r["weight/min"] == pytest.approx(1.0) == r["weight/max"] for r in weighted)

    user = tmp_path / "user"
    user.mkdir()
    # The spec's example file, unchanged except its base-class import (relative inside DataFlex, absolute
    # outside), plus a marker line after it that shows this module was the one imported.
    (user / "my_weighters.py").write_text(
        textwrap.dedent("""
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

            def get_weighted_loss(self, losses: torch.Tensor, *, ctx: Any = None, model: nn.Module | None =
            None,
                                  inputs: dict[str, Union[torch.Tensor, Any]] | None = None) -> torch.Tensor:
                if not torch.is_tensor(losses) or losses.dim() == 0:
                    return losses
                weights = torch.ones_like(losses) / losses.numel()
                weighted_loss = torch.sum(weights * losses)
                return weighted_loss

        open("user_module_imported", "w").close()
    """)
    )
    run_dir = tmp_path / "second"
    env = {"PYTHONPATH": os.pathsep.join([str(user), os.environ.get("PYTHONPATH", "")])}
    cli(
        *WEIGHT,
        "component=custom",
        "component._target_=my_weighters.CustomWeighter",
        *FAST,
        f"trainer.output_dir={run_dir}",
        cwd=tmp_path,
        env=env,
    )
    assert (tmp_path / "user_module_imported").exists()
    weighted = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("weight/active") == 1.0 for r in weighted)
