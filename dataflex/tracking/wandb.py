"""`logger=wandb`: a Weights & Biases run next to metrics.jsonl and the PNG plots.

- Main process only: trackers are built once (rank 0; the loop only calls them there too).
- Offline automatically when there are no credentials (one log line says so and how to upload later);
  `init_timeout` bounds the wait for the server, and a failed online init falls back to offline, so a dead
  network never hangs or kills a run.
- Every metric is plotted against `global_step` (`define_metric`), `weight/values` becomes a histogram,
  and at the end the mixture proportions, selection fractions and per-domain eval losses are also logged
  as `wandb.plot.line_series` charts. `finish()` always ends the wandb run (TrackerGroup reaches it even
  when another tracker fails), so a failed job never leaves a run open in a sweep.
- `resume="allow"` with an id kept in `<run dir>/wandb_run_id`: running again in the same run dir continues
  the same wandb run.
"""

from __future__ import annotations

import math
import netrc
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dataflex.tracking.base import Tracker, TrackerGroup
from dataflex.utils.logging import logger

ID_FILE = "wandb_run_id"
STEP_KEY = "global_step"
# prefix of the charted series -> (chart key, title)
CHARTS = {
    "mixture/": ("charts/mixture_proportions", "mixture proportions"),
    "select/domain_fraction/": ("charts/selection_domain_fractions", "selected-sample domain fractions"),
    "eval/loss/": ("charts/eval_loss_per_domain", "eval loss per domain"),
}
HISTOGRAM_KEYS = ("weight/values",)


def has_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` stores it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def choose_mode(mode: str | None) -> tuple[str, bool]:
    """(mode, chosen because there are no credentials)."""
    if mode:
        return mode, False
    env = os.environ.get("WANDB_MODE")
    if env:
        return ("offline" if env == "dryrun" else env), False
    return ("online", False) if has_credentials() else ("offline", True)


def stable_id(run_dir: Path, given: str | None) -> str:
    """The id to (re)use: `given`, else the one stored in the run dir, else a new one (then stored)."""
    path = run_dir / ID_FILE
    if given:
        run_id = given
    elif path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    else:
        run_id = secrets.token_hex(6)
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def _scalar(value: Any) -> float | None:
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # non-finite floats arrive as "nan"/"inf"
        except ValueError:
            return None
    return None


class WandbTracker:
    """Logs each metrics dict at its global step; keeps the charted series to draw them once at the end."""

    def __init__(self, run) -> None:
        self.run = run
        self.last_step = 0
        self.history: dict[str, dict[str, tuple[list[int], list[float]]]] = {p: {} for p in CHARTS}
        run.define_metric(STEP_KEY, hidden=True)
        run.define_metric("*", step_metric=STEP_KEY)
        run.define_metric("eval/loss*", step_metric=STEP_KEY, summary="min,last")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        import wandb

        data: dict[str, Any] = {STEP_KEY: step}
        for key, value in metrics.items():
            if key in HISTOGRAM_KEYS or isinstance(value, (list, tuple)):
                numbers = [x for x in (_scalar(v) for v in value) if x is not None and math.isfinite(x)]
                if numbers:
                    data[key] = wandb.Histogram(numbers)
                continue
            number = _scalar(value)
            if number is None:
                continue
            data[key] = number
            for prefix, series in self.history.items():
                name = key[len(prefix) :]
                if key.startswith(prefix) and name and "/" not in name:
                    steps, values = series.setdefault(name, ([], []))
                    steps.append(step)
                    values.append(number)
        self.last_step = max(self.last_step, step)
        self.run.log(data)

    def _charts(self) -> dict[str, Any]:
        import wandb

        charts: dict[str, Any] = {}
        for prefix, series in self.history.items():
            if not series:
                continue
            key, title = CHARTS[prefix]
            names = sorted(series) if prefix == "eval/loss/" else list(series)
            charts[key] = wandb.plot.line_series(
                xs=[series[n][0] for n in names],
                ys=[series[n][1] for n in names],
                keys=names,
                title=title,
                xname="step",
            )
        return charts

    def finish(self) -> None:
        try:
            charts = self._charts()
            if charts:
                self.run.log({STEP_KEY: self.last_step, **charts})
        finally:
            sync_dir = getattr(self.run.settings, "sync_dir", None)
            offline = self.run.settings.mode == "offline"
            self.run.finish()
            if offline and sync_dir:
                logger.info(f"wandb: offline run saved in {sync_dir}; upload it with `wandb sync {sync_dir}`")


def _init(mode: str, **kwargs):
    import wandb

    return wandb.init(mode=mode, **kwargs)


def start_wandb_run(
    *,
    run_dir: Path,
    run_config: Any = None,
    project: str = "dataflex",
    entity: str | None = None,
    mode: str | None = None,
    dir: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    id: str | None = None,
    job_type: str = "train",
    init_timeout: float = 90.0,
) -> WandbTracker | None:
    """Starts the wandb run (or returns None for mode=disabled)."""
    import wandb

    from dataflex.tracking.context import run_info

    mode, auto_offline = choose_mode(mode)
    if mode == "disabled":
        return None
    info = run_info(run_config)
    wandb_dir = Path(dir or os.environ.get("WANDB_DIR") or run_dir)
    wandb_dir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        project=project,
        entity=entity,
        dir=str(wandb_dir),
        group=group or info.group,
        name=name or info.name,
        tags=list(dict.fromkeys([*info.tags, *(tags or [])])),
        config=info.config,
        id=stable_id(run_dir, id),
        resume="allow",
        job_type=job_type,
        settings=wandb.Settings(init_timeout=init_timeout, reinit="finish_previous"),
    )
    if auto_offline:
        logger.info(
            f"wandb: no credentials (WANDB_API_KEY or `wandb login`), logging offline under {wandb_dir}/wandb"
        )
    try:
        run = _init(mode, **kwargs)
    except Exception as err:  # noqa: BLE001 - network/auth trouble must not cost the training run
        if mode != "online":
            raise
        logger.warning(f"wandb: online init failed ({type(err).__name__}: {err}); logging offline instead")
        run = _init("offline", **kwargs)
    return WandbTracker(run)


def build_wandb_trackers(
    *,
    run_dir: str | Path,
    plots: bool = True,
    run_config: Any = None,
    tensorboard: bool = False,
    tensorboard_dir: str | None = None,
    **wandb_args: Any,
) -> TrackerGroup:
    """`logger=wandb`: the default trackers (metrics.jsonl, plots) plus wandb; rank 0 only."""
    from dataflex.config.logger import WANDB_MODES
    from dataflex.tracking import build_trackers, is_main_process

    mode = wandb_args.get("mode")
    if mode is not None and mode not in WANDB_MODES:
        raise ValueError(f"logger.mode={mode!r} is unknown; choose one of {WANDB_MODES} or null (auto).")
    group = build_trackers(
        run_dir=run_dir,
        plots=plots,
        tensorboard=tensorboard,
        tensorboard_dir=tensorboard_dir,
        run_config=run_config,
    )
    if not is_main_process():
        return group
    tracker: Tracker | None = start_wandb_run(run_dir=Path(run_dir), run_config=run_config, **wandb_args)
    return TrackerGroup(group.trackers + ([tracker] if tracker else []))
