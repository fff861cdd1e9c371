"""Experiment tracking: metrics.jsonl (always), plots, and optional external trackers (wandb)."""

from __future__ import annotations

import os
from pathlib import Path

from dataflex.tracking.base import Tracker, TrackerGroup
from dataflex.tracking.jsonl import JsonlTracker, read_metrics

METRICS_FILE = "metrics.jsonl"


def is_main_process() -> bool:
    """Rank 0 (or not distributed). Trackers are built before the Accelerator, so this reads the launcher's
    RANK variable (set by torchrun and `accelerate launch`)."""
    return int(os.environ.get("RANK", "0")) == 0


def build_trackers(
    *,
    run_dir: str | Path,
    plots: bool = True,
    tensorboard: bool = False,
    tensorboard_dir: str | None = None,
    run_config: object = None,
    **_: object,
) -> TrackerGroup:
    """`logger=default`: metrics.jsonl in the run dir (+ plots at the end when `plots`, + TensorBoard event
    files when `tensorboard`); none off rank 0."""
    if not is_main_process():
        return TrackerGroup([])
    trackers: list[Tracker] = [JsonlTracker(Path(run_dir) / METRICS_FILE)]
    if plots:
        from dataflex.tracking.plots import PlotTracker

        trackers.append(PlotTracker(Path(run_dir)))
    if tensorboard:
        from dataflex.tracking.tensorboard import TENSORBOARD_DIR, TensorBoardTracker

        trackers.append(TensorBoardTracker(tensorboard_dir or Path(run_dir) / TENSORBOARD_DIR, run_config))
    return TrackerGroup(trackers)


__all__ = [
    "build_trackers",
    "is_main_process",
    "JsonlTracker",
    "TrackerGroup",
    "Tracker",
    "read_metrics",
    "METRICS_FILE",
]
