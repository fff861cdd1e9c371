"""tqdm progress bars (with ETA) for long passes outside the training bar: scoring candidates, evaluation,
tokenizing. Shown on the main process only, never when trainer.disable_tqdm=true (the loop sets it)."""

from __future__ import annotations

import os

_ENABLED = [True]


def configure_progress(enabled: bool) -> None:
    """Set once by the training loop: `is_main_process and not trainer.disable_tqdm`."""
    _ENABLED[0] = bool(enabled)


def progress_enabled() -> bool:
    return _ENABLED[0] and int(os.environ.get("RANK", "0")) == 0


def progress(total: int, desc: str, unit: str = "it"):
    """A tqdm bar (a disabled one when progress is off); use as a context manager and call `.update(n)`."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not progress_enabled(),
        dynamic_ncols=True,
        leave=False,
        mininterval=1.0,
    )
