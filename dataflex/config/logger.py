"""Tracker config schemas (the `logger=` group)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class JsonlLoggerConfig:
    """`logger=default`: metrics.jsonl in the run dir (always written) and PNG plots at the end."""

    _target_: str = "dataflex.tracking.build_trackers"
    plots: bool = True
