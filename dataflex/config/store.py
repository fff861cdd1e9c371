"""Registers every config schema in Hydra's ConfigStore.

Each YAML option in `conf/<group>/` extends one of these schemas explicitly (`defaults: [/schema/...]`),
so a misspelled key or a wrong type fails at compose time with Hydra's own message.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from dataflex.config.launcher import LauncherConfig


@dataclass
class RunConfig:
    """The root: each group lands in its own node, typed by the schema its option extends."""

    trainer: Any = MISSING
    component: Any = None
    data: Any = MISSING
    model: Any = MISSING
    logger: Any = MISSING
    dist: Any = MISSING
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    run_name: str = "dataflex"
    """A label for the run (summary, trackers)."""


# Modules that expose `SCHEMAS: dict[group, dict[name, dataclass]]`; one per area, so each area adds its
# schemas in its own file.
SCHEMA_MODULES = (
    "dataflex.config.schemas",
    "dataflex.train.trainer.schemas",
    "dataflex.train.mixer.schemas",
    "dataflex.train.selector.schemas",
    "dataflex.train.weighter.schemas",
)


def all_schemas() -> dict[str, dict[str, type]]:
    merged: dict[str, dict[str, type]] = {}
    for module in SCHEMA_MODULES:
        for group, options in importlib.import_module(module).SCHEMAS.items():
            for name, node in options.items():
                if name in merged.setdefault(group, {}):
                    raise ValueError(f"schema {group}/{name} is defined twice ({module})")
                merged[group][name] = node
    return merged


def register_schema(group: str, name: str, node: type) -> None:
    """Adds a schema that YAML options (or a user's own config dir) can extend as `/schema/<group>/<name>`."""
    ConfigStore.instance().store(group=f"schema/{group}", name=name, node=node)


def register_all() -> None:
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    for group, options in all_schemas().items():
        for name, node in options.items():
            register_schema(group, name, node)
