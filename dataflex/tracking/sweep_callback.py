"""Hydra callback of `dataflex-run -m`: one closing line that says how many jobs failed and where.

    3 of 8 jobs failed: multirun_outputs/.../2_trainer.learning_rate=-1, ...

It reads each job's `status.json` (written by every launcher's job process), so joblib, submitit and SLURM
sweeps are counted the same way. The sweep dir is remembered so `dataflex-run` can remove it when the sweep
fails before any job ran (a compose error of one job aborts the whole sweep, leaving only multirun.yaml).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dataflex.utils.logging import logger

current_sweep_dir: Path | None = None
"""The sweep dir of the multirun in progress in this process (None outside one)."""


def sweep_summary(sweep_dir: Path) -> str:
    from dataflex.tracking.sweep import collect_jobs

    jobs = collect_jobs([sweep_dir]) if sweep_dir.is_dir() else []
    failed = [j for j in jobs if j.status == "failed"]
    if not failed:
        return f"all {len(jobs)} jobs completed: {sweep_dir}" if jobs else f"no job ran in {sweep_dir}"
    return f"{len(failed)} of {len(jobs)} jobs failed: {', '.join(str(j.job_dir) for j in failed)}"


def remove_if_empty(sweep_dir: Path | None) -> bool:
    """Deletes a sweep dir that holds nothing but Hydra's multirun.yaml; True if it did."""
    if sweep_dir is None or not sweep_dir.is_dir():
        return False
    if {p.name for p in sweep_dir.iterdir()} - {"multirun.yaml"}:
        return False
    (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
    sweep_dir.rmdir()
    date_dir = sweep_dir.parent  # multirun_outputs/<date>/ when it held only this sweep
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", date_dir.name) and not any(date_dir.iterdir()):
        date_dir.rmdir()
    return True


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global current_sweep_dir
        current_sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global current_sweep_dir
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        logger.info(sweep_summary(sweep_dir))
        current_sweep_dir = None
