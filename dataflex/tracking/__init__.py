"""Experiment tracking: metrics.jsonl (always), plots, and optional external trackers."""

from __future__ import annotations

from pathlib import Path

from dataflex.tracking.base import Tracker, TrackerGroup
from dataflex.tracking.jsonl import JsonlTracker, read_metrics

METRICS_FILE = "metrics.jsonl"


def build_trackers(*, run_dir: str | Path, plots: bool = True, **_: object) -> TrackerGroup:
    """`logger=default`: metrics.jsonl in the run dir (+ plots at the end when `plots`)."""
    trackers: list[Tracker] = [JsonlTracker(Path(run_dir) / METRICS_FILE)]
    if plots:
        from dataflex.tracking.plots import PlotTracker

        trackers.append(PlotTracker(Path(run_dir)))
    return TrackerGroup(trackers)


__all__ = ["build_trackers", "JsonlTracker", "TrackerGroup", "Tracker", "read_metrics", "METRICS_FILE"]
