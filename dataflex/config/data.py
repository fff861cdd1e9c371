"""Data config schema (the `data=` group): the DataEngine's DataArguments plus its `_target_`."""

from __future__ import annotations

from dataclasses import dataclass

from dataflex.data.arguments import DataArguments


@dataclass
class DataConfig(DataArguments):
    _target_: str = "dataflex.data.DataEngine.from_config"
