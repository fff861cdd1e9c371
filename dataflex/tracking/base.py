"""Trackers receive metric dicts; the loop calls them on rank 0 only."""

from __future__ import annotations

from typing import Any, Protocol


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def finish(self) -> None: ...


class TrackerGroup:
    """Fans out to several trackers; `finish` always reaches every one of them."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def finish(self) -> None:
        errors = []
        for t in self.trackers:
            try:
                t.finish()
            except Exception as err:  # noqa: BLE001 - report every tracker's failure, not just the first
                errors.append(err)
        if errors:
            raise errors[0]
