"""Registers every config schema in Hydra's ConfigStore.

Each YAML option in `conf/<group>/` extends one of these schemas explicitly (`defaults: [/schema/...]`),
so a misspelled key or a wrong type fails at compose time with Hydra's own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from dataflex.config.component import NO_COMPONENT, mix, per_step, select, weight
from dataflex.config.data import DataConfig
from dataflex.config.dist import DistConfig
from dataflex.config.infobatch import InfoBatchConfig
from dataflex.config.launcher import LauncherConfig
from dataflex.config.logger import JsonlLoggerConfig, WandbLoggerConfig
from dataflex.config.model import HFModelConfig, TinyModelConfig, TinyMoeModelConfig
from dataflex.config.pipeline import PipelineTrainerConfig
from dataflex.config.reorder import DynamicReorderConfig
from dataflex.config.trainer import (
    DynamicMixTrainerConfig,
    DynamicSelectTrainerConfig,
    DynamicWeightTrainerConfig,
    PerStepTrainerConfig,
    StaticTrainerConfig,
)


@dataclass
class RunConfig:
    """The root: each group lands in its own node, typed by the schema its option extends."""

    trainer: Any = MISSING
    component: Any = None
    pipeline: Any = None
    """trainer=pipeline's stages (`pipeline=<preset>`, conf/pipeline/); the trainer reads them."""
    data: Any = MISSING
    model: Any = MISSING
    logger: Any = MISSING
    dist: Any = MISSING
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    run_name: str = "dataflex"
    """A label for the run (summary, trackers)."""


SCHEMAS: dict[str, dict[str, type]] = {
    "trainer": {
        "static": StaticTrainerConfig,
        "dynamic_select": DynamicSelectTrainerConfig,
        "dynamic_mix": DynamicMixTrainerConfig,
        "dynamic_weight": DynamicWeightTrainerConfig,
        "dynamic_reorder": DynamicReorderConfig,
        "infobatch": InfoBatchConfig,
        "per_step": PerStepTrainerConfig,
        "pipeline": PipelineTrainerConfig,
    },
    "component": {
        **{f"dynamic_select_{name}": node for name, node in select.SCHEMAS.items()},
        **{f"dynamic_mix_{name}": node for name, node in mix.SCHEMAS.items()},
        **{f"dynamic_weight_{name}": node for name, node in weight.SCHEMAS.items()},
        **{f"per_step_{name}": node for name, node in per_step.SCHEMAS.items()},
    },
    "model": {"tiny": TinyModelConfig, "hf": HFModelConfig, "tiny_moe": TinyMoeModelConfig},
    "data": {"engine": DataConfig},
    "logger": {"default": JsonlLoggerConfig, "wandb": WandbLoggerConfig},
    "dist": {"dist": DistConfig},
}
"""Every schema by group and name; a YAML option extends `/schema/<group>/<name>`. A component's name is
`<trainer>_<component name>` (conf/components/<trainer>/<name>.yaml)."""


def register_schema(group: str, name: str, node: type) -> None:
    """Adds a schema that YAML options (or a user's own config dir) can extend as `/schema/<group>/<name>`."""
    ConfigStore.instance().store(group=f"schema/{group}", name=name, node=node)


def register_all() -> None:
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    ConfigStore.instance().store(group="schema/component", name="none", node=NO_COMPONENT)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            register_schema(group, name, node)
