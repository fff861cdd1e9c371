"""TensorBoard event files (`logger=tensorboard`, or `logger.tensorboard=true` next to wandb): every scalar
against the global step, list metrics (`weight/values`) as histograms, the resolved config as text.

View them with `tensorboard --logdir <run dir>/tensorboard` (or the sweep dir: one run per job)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dataflex.utils.logging import logger

TENSORBOARD_DIR = "tensorboard"


def _number(value: Any) -> float | None:
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str):  # metrics.jsonl writes non-finite floats as "nan"/"inf"
        try:
            return float(value)
        except ValueError:
            return None
    return None


class TensorBoardTracker:
    def __init__(self, log_dir: str | Path, run_config: Any = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch's writer needs the `tensorboard` package
            raise ImportError(
                "logger.tensorboard=true needs the tensorboard package: pip install tensorboard"
            ) from err
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        if run_config is not None:
            from omegaconf import OmegaConf

            text = OmegaConf.to_yaml(run_config, resolve=False)
            self.writer.add_text("config", "```\n" + text + "\n```", global_step=0)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for key, value in metrics.items():
            if isinstance(value, (list, tuple)):
                numbers = [x for x in (_number(v) for v in value) if x is not None and math.isfinite(x)]
                if numbers:
                    import numpy as np

                    self.writer.add_histogram(key, np.asarray(numbers), global_step=step)
                continue
            number = _number(value)
            if number is not None:
                self.writer.add_scalar(key, number, global_step=step)

    def finish(self) -> None:
        self.writer.close()
        logger.info(
            f"tensorboard: event files in {self.log_dir}; view with `tensorboard --logdir {self.log_dir}`"
        )
