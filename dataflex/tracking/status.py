"""`status.json` in each job dir, so a sweep report can tell completed, failed and killed jobs apart.

In a multirun a failing job must not stop the sweep: `guarded_run` logs the error, records it and lets
Hydra go on to the next job. A single run re-raises, so `dataflex-run` still exits non-zero.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataflex.tracking import is_main_process
from dataflex.train.interrupt import SigtermAsInterrupt, TrainingInterrupted
from dataflex.utils.logging import logger

STATUS_FILE = "status.json"


def write_status(job_dir: str | Path, status: str, **fields: Any) -> None:
    if not is_main_process():
        return
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "host": socket.gethostname(), "pid": os.getpid(), **fields}
    (job_dir / STATUS_FILE).write_text(json.dumps(record, indent=2, default=str))


def resume_command(job_dir: str | Path) -> str:
    """The command that continues the run of `job_dir` (the folder holding its .hydra/)."""
    return f"dataflex-run --resume {shlex.quote(str(Path(job_dir).resolve()))}"


def interrupted_message(stop: TrainingInterrupted) -> str:
    """The one line `dataflex-run` prints for an interrupted run."""
    saved = (
        f"checkpoint {stop.checkpoint}"
        if stop.checkpoint
        else "no checkpoint (trainer.save_steps=0): it restarts from step 0"
    )
    command = getattr(stop, "resume_command", None)
    return f"dataflex-run: interrupted ({stop.signal_name}) after step {stop.step}; {saved}." + (
        f" Resume with: {command}" if command else ""
    )


def _output_dir(cfg: Any, job_dir: Path) -> str:
    """Where the run writes metrics/summary: trainer.output_dir when set (absolute, so a report run from
    another folder finds it), else the job dir."""
    from omegaconf import OmegaConf

    try:
        out = OmegaConf.select(cfg, "trainer.output_dir", default=None) if cfg is not None else None
    except Exception:  # noqa: BLE001 - an unresolvable path is the run's error to report, not ours
        out = None
    return str(Path(out or job_dir).resolve())


class InvalidConfig(SystemExit):
    """A single run refused at validation: one line on stderr, exit code 1, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(f"dataflex-run: error: {message}")


def guarded_run(
    fn: Callable[[], dict[str, Any]],
    job_dir: str | Path,
    *,
    multirun: bool,
    cfg: Any = None,
    check: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Runs `check()` then `fn()` and records the outcome in `job_dir/status.json` (with the run's output dir
    from `cfg`).

    Returns fn's result; on error returns None in a multirun (after logging it) and re-raises otherwise. A
    `check` failure (bad config) is one line, in a sweep's log and as `InvalidConfig` for a single run; the
    traceback is kept in status.json."""
    start = time.perf_counter()
    run_dir = _output_dir(cfg, Path(job_dir))
    write_status(job_dir, "running", run_dir=run_dir)
    checked = check is None
    try:
        with SigtermAsInterrupt():
            if check is not None:
                check()
                checked = True
            result = fn()
    except KeyboardInterrupt as err:  # SIGINT/SIGTERM: record it and stop (a sweep stops too)
        stop = err if isinstance(err, TrainingInterrupted) else TrainingInterrupted(0, "SIGINT")
        stop.resume_command = resume_command(job_dir)
        write_status(
            job_dir,
            "interrupted",
            elapsed_s=time.perf_counter() - start,
            run_dir=run_dir,
            resume=stop.resume_command,
            **stop.fields(),
        )
        raise stop from None
    except Exception as err:
        elapsed = time.perf_counter() - start
        message = f"{type(err).__name__}: {err}"
        write_status(
            job_dir,
            "failed",
            error=message,
            elapsed_s=elapsed,
            run_dir=run_dir,
            traceback=traceback.format_exc(),
        )
        if not multirun:
            if not checked:
                raise InvalidConfig(str(err)) from None
            raise
        if not checked:
            logger.error(f"job refused, the sweep goes on ({job_dir}): {message}")
        else:
            logger.error(f"job failed, the sweep goes on ({job_dir}): {message}\n{traceback.format_exc()}")
        return None
    write_status(job_dir, "completed", elapsed_s=time.perf_counter() - start, run_dir=run_dir)
    return result
