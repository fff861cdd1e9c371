"""Registers every config schema in Hydra's ConfigStore.

Each YAML option in `conf/<group>/` extends one of these schemas explicitly (`defaults: [/schema/...]`),
so a misspelled key or a wrong type fails at compose time with Hydra's own message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from dataflex.config.data import DataConfig
from dataflex.config.logger import JsonlLoggerConfig
from dataflex.config.model import HFModelConfig, TinyModelConfig
from dataflex.config.trainer import StaticTrainerConfig


@dataclass
class RunConfig:
    """The root: each group lands in its own node, typed by the schema its option extends."""

    trainer: Any = MISSING
    component: Any = None
    data: Any = MISSING
    model: Any = MISSING
    logger: Any = MISSING
    run_name: str = "dataflex"
    """A label for the run (summary, trackers)."""


SCHEMAS: dict[str, dict[str, type]] = {
    "trainer": {"static": StaticTrainerConfig},
    "model": {"tiny": TinyModelConfig, "hf": HFModelConfig},
    "data": {"engine": DataConfig},
    "logger": {"default": JsonlLoggerConfig},
    "component": {},
}


def register_schema(group: str, name: str, node: type) -> None:
    """Adds a schema that YAML options can extend as `/schema/<group>/<name>@_here_`."""
    SCHEMAS.setdefault(group, {})[name] = node
    ConfigStore.instance().store(group=f"schema/{group}", name=name, node=node)


def register_all() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
