"""Interrupted runs say so: SIGTERM (`timeout`, SLURM preemption) and SIGINT (Ctrl-C) stop training cleanly.

- SIGTERM or a first SIGINT: the current step finishes, all ranks agree to stop after the same step (so no
  rank waits in a collective for one that left), a checkpoint is written when `trainer.save_steps` is set,
  then `TrainingInterrupted` is raised.
- A second SIGINT: Python's KeyboardInterrupt stops at once (no checkpoint); the loop re-raises it as
  `TrainingInterrupted` with the last completed step.

`dataflex-run` records `status.json: interrupted` with the step and prints one line with the exact resume
command instead of a traceback.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeAlias

_Handler: TypeAlias = "Callable[[int, FrameType | None], Any] | int | signal.Handlers | None"
"""What `signal.signal` installs and returns."""

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by a signal after `step` completed steps (a KeyboardInterrupt, so Hydra and sweeps
    let it through like Ctrl-C)."""

    def __init__(self, step: int, signal_name: str = "SIGINT", checkpoint: str | None = None) -> None:
        super().__init__(f"{signal_name} at step {step}")
        self.step, self.signal_name, self.checkpoint = step, signal_name, checkpoint

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal_name, 130)

    def fields(self) -> dict:
        return {"step": self.step, "signal": self.signal_name, "checkpoint": self.checkpoint}


class StopRequest:
    """Installs SIGTERM/SIGINT handlers (main thread only) that ask the loop to stop after the current step;
    a second SIGINT raises KeyboardInterrupt at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, _Handler] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        from dataflex.utils.logging import logger

        logger.warning(
            f"{self.signal_name} received: stopping after the current step"
            + (" (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "")
        )

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def agreed(self, world_size: int, device) -> bool:
        """True on every rank when any rank was asked to stop (a scalar all-reduce per step if > 1 rank).

        The answer is the vote alone: a signal handled between the all-reduce and the return (Python runs
        handlers between bytecodes) must not make this rank stop while the others, who counted its vote as
        0, go on to the next step and wait for it in a collective forever; it is counted at the next step."""
        local = self.signal_name is not None
        if world_size <= 1:
            return local
        import torch

        from dataflex.train.distributed import all_reduce_sum

        votes = int(all_reduce_sum(torch.tensor(int(local), device=device)))
        if votes and self.signal_name is None:
            self.signal_name = "SIGTERM"  # another rank was asked
        return votes > 0


class SigtermAsInterrupt:
    """Outside the training loop (data loading, model build) SIGTERM stops at once like Ctrl-C, as a
    `TrainingInterrupted` at step 0, so the job is recorded as interrupted instead of dying silently."""

    def __init__(self) -> None:
        self._previous: _Handler = None

    @staticmethod
    def _handle(signum: int, frame: FrameType | None) -> None:
        raise TrainingInterrupted(0, "SIGTERM")

    def __enter__(self) -> SigtermAsInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@contextmanager
def signals_to_main_thread() -> Iterator[None]:
    """Blocks SIGTERM/SIGINT in the calling (main) thread while native threads are started inside (gloo's
    and NCCL's communication threads, started by `init_process_group`): a thread inherits its creator's signal
    mask, so the kernel then delivers these signals to the main thread only, where Python runs the handler,
    instead of interrupting a communication thread's system call mid-collective. Signals that arrive meanwhile
    stay pending and are handled as soon as the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def interruptible(progress: Callable[[], int]) -> Iterator[StopRequest]:
    """The training loop's guard: yields the `StopRequest` to poll after each step; an immediate Ctrl-C
    (KeyboardInterrupt) becomes `TrainingInterrupted` at `progress()` completed steps."""
    with StopRequest() as stop:
        try:
            yield stop
        except KeyboardInterrupt as err:
            if isinstance(err, TrainingInterrupted):
                raise
            raise TrainingInterrupted(progress(), "SIGINT") from None
