"""Tracker config schemas (the `logger=` group)."""

from __future__ import annotations

from dataclasses import dataclass, field

WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class JsonlLoggerConfig:
    """`logger=default`: metrics.jsonl in the run dir (always written) and PNG plots at the end."""

    _target_: str = "dataflex.tracking.build_trackers"
    plots: bool = True
    """Draw plots/*.png in the run dir when the run ends.

    Redraw them any time with `dataflex-report plots RUN_DIR`."""
    tensorboard: bool = False
    """Also write TensorBoard event files (`logger=tensorboard` sets it;
    `logger=wandb logger.tensorboard=true` writes both).
    View: `tensorboard --logdir <run dir>/tensorboard`."""
    tensorboard_dir: str | None = None
    """Where the event files go; None: `<run dir>/tensorboard`."""


@dataclass
class WandbLoggerConfig(JsonlLoggerConfig):
    """`logger=wandb`: everything of `logger=default` plus a Weights & Biases run (main process only).

    With no credentials (no WANDB_API_KEY, no `wandb login`) the run is written offline into
    `<dir>/wandb/offline-run-*`; upload it later with `wandb sync`."""

    _target_: str = "dataflex.tracking.wandb.build_wandb_trackers"
    project: str = "dataflex"
    entity: str | None = None
    """W&B team or user; None = your default entity."""
    mode: str | None = None
    """online | offline | disabled; None = WANDB_MODE if set, else online with credentials and offline
    without."""
    dir: str | None = None
    """Where wandb writes its files; None = $WANDB_DIR if set, else the run dir."""
    group: str | None = None
    """None = the sweep (multirun_outputs/<date>/<time>, prefixed by the experiment preset if any)."""
    name: str | None = None
    """None = the job's overrides (the sweep job dir name), or the command-line overrides of a single run."""
    tags: list[str] = field(default_factory=list)
    """Extra tags; trainer/component/data/model/experiment choices are always added."""
    id: str | None = None
    """Force a run id (e.g. to continue a run); None = the id stored in <run dir>/wandb_run_id, else a new
    one."""
    job_type: str = "train"
    init_timeout: float = 90.0
    """Seconds wandb.init may wait for the server before the run falls back to offline."""

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in WANDB_MODES:
            raise ValueError(
                f"logger.mode={self.mode!r} is unknown; choose one of {WANDB_MODES} or null (auto)."
            )
        if self.init_timeout <= 0:
            raise ValueError(f"logger.init_timeout must be > 0 seconds, got {self.init_timeout}.")
