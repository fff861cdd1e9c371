"""Who this run is, for external trackers: resolved config, sweep group, job name and tags.

Read from the composed config and, under `dataflex-run`, from Hydra's runtime config (sweep dir, the job's
overrides, the chosen option of each group). Outside Hydra (a script calling `run()`), only the config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TAG_GROUPS = ("trainer", "component", "data", "model", "experiment")


@dataclass
class RunInfo:
    config: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)


def resolved_config(cfg: Any) -> dict[str, Any]:
    """The config as the run used it (interpolations resolved); unresolvable parts stay as written."""
    from omegaconf import OmegaConf

    if cfg is None:
        return {}
    if not OmegaConf.is_config(cfg):
        return dict(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - e.g. an interpolation that needs Hydra; the raw config still helps
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _hydra_config():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def run_info(cfg: Any = None) -> RunInfo:
    info = RunInfo(config=resolved_config(cfg))
    hc = _hydra_config()
    if hc is None:
        return info
    from hydra.types import RunMode

    choices = {k: v for k, v in hc.runtime.choices.items() if v is not None}
    info.tags = [f"{g}:{choices[g]}"[:64] for g in TAG_GROUPS if g in choices]
    experiment = choices.get("experiment")
    overrides = [str(o) for o in hc.overrides.task]
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(str(hc.sweep.dir))
        stamp = f"{sweep.parent.name}/{sweep.name}" if sweep.parent.name else sweep.name
        info.group = f"{experiment}/{stamp}" if experiment else stamp
        info.name = Path(str(hc.runtime.output_dir)).name  # "<num>_<swept overrides>" (see dataflex/cli.py)
    else:
        info.name = " ".join(overrides) or (cfg.get("run_name") if cfg is not None else None)
    if info.name:
        info.name = re.sub(r"\s+", " ", info.name)[:128]
    return info
