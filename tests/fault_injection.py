"""Fault injection for the resume tests, installed only in the test's subprocess (nothing in dataflex/).

With `DATAFLEX_FAULT=<where>:<step>` in the environment, `install_from_env()` makes the process SIGKILL itself
(a crash leaves no chance to clean up) at:
- `step:N` - after optimizer step N has ended completely (its ledger rows, eval and checkpoint done), i.e.
  as step N + 1 starts;
- `save:N` - while checkpoint-N is being saved: everything is written to `checkpoint-N.tmp`, which is not
  yet renamed to `checkpoint-N`.
The `cli` fixture's `fault=` arms it in every process of the run through tests/fault_site/sitecustomize.py
(torchrun's workers included); `tests/deepspeed_cpu_run.py` calls `install_from_env()` itself.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

FAULT_ENV = "DATAFLEX_FAULT"


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _OsKilledBeforeRename:
    """`os` as seen by `dataflex.train.checkpoint`, except that renaming checkpoint-N.tmp kills first."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(os, attr)

    def replace(self, src: Any, dst: Any) -> None:
        if Path(dst).name == self._name:
            _kill()
        os.replace(src, dst)


def install(fault: str | None) -> None:
    """Arms `fault` (`step:N` or `save:N`; None: nothing) in this process."""
    if not fault:
        return
    where, step = fault.split(":")
    n = int(step)
    if where == "step":
        from dataflex.train.loop import TrainingLoop

        train_step = TrainingLoop._train_step

        def _train_step(loop: Any, step: int) -> Any:
            if step == n:  # 0-based index of the step about to start == steps completed
                _kill()
            return train_step(loop, step)

        TrainingLoop._train_step = _train_step  # type: ignore[method-assign]
    elif where == "save":
        import dataflex.train.checkpoint as checkpoint

        checkpoint.os = _OsKilledBeforeRename(f"checkpoint-{n}")  # type: ignore[assignment]
    else:
        raise ValueError(f"{FAULT_ENV}={fault!r}: expected step:<N> or save:<N>.")


def install_from_env() -> None:
    install(os.environ.get(FAULT_ENV))
