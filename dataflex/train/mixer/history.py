"""The record of a mix run: every proportion change (step, proportions, source) and the domain counts of
every trained batch; written as `mixture_history.json` (the proportions are drawn in
`plots/mixture_proportions.png`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class MixtureHistory:
    def __init__(self, names: Sequence[str], schedule: dict[str, Any]) -> None:
        self.names = list(names)
        self.schedule = dict(schedule)
        self.updates: list[dict[str, Any]] = []
        """{"step": s, "proportions": [...], "source": "init"|<mixer>}: in force from step s+1 on."""
        self.trained_counts: list[list[int]] = []
        """Samples per domain in each trained step's global batch (index 0 = step 1)."""

    def record(self, step: int, proportions: Sequence[float], source: str) -> None:
        self.updates.append(
            {"step": int(step), "proportions": [float(p) for p in proportions], "source": source}
        )

    def record_batch(self, counts: np.ndarray) -> None:
        self.trained_counts.append([int(c) for c in counts])

    def as_dict(self) -> dict[str, Any]:
        return {
            "domains": self.names,
            "schedule": self.schedule,
            "updates": self.updates,
            "trained_counts": self.trained_counts,
        }

    def write_json(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_dict()))
        tmp.replace(path)
