"""`dataflex-run`: compose the config with Hydra, then build and train (see dataflex/run.py)."""

from __future__ import annotations

import os
import re
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from dataflex.config import register_all
from dataflex.config.paths import config_dir
from dataflex.launch import launch_workers, run_time, torchrun_prelude, under_torchrun

SWEPT_KEYS_ENV = "DATAFLEX_SWEPT_KEYS"


def _swept_keys(argv: list[str]) -> set[str]:
    """Keys the command line sweeps over (`k=a,b`, `k=range(..)`, `k=glob(..)`, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    candidates = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(candidates)
    except Exception:  # noqa: BLE001 - an unparsable argv just means: name jobs by all their overrides
        return set()
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def job_name(task_overrides) -> str:
    """A readable, path-safe sweep job dir name: the swept overrides of this job (all of them if unknown)."""
    items = [str(o) for o in task_overrides]
    # Launchers that run jobs in other processes (joblib, submitit) get the sweep's keys from the environment.
    env_keys = os.environ.get(SWEPT_KEYS_ENV)
    swept = set(env_keys.split(",")) if env_keys else _swept_keys(sys.argv[1:])
    shown = [o for o in items if o.split("=", 1)[0].lstrip("+~") in swept] or items
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", ",".join(shown))[:120] or "default"


if not OmegaConf.has_resolver("dataflex_job_name"):
    OmegaConf.register_new_resolver("dataflex_job_name", job_name)
if not OmegaConf.has_resolver("dataflex_now"):
    OmegaConf.register_new_resolver("dataflex_now", run_time, use_cache=True)
register_all()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dataflex.run import run, validate
    from dataflex.tracking.status import guarded_run
    from dataflex.train.loop import format_summary
    from dataflex.utils.logging import logger

    # In a multirun a failed job is logged and recorded in <job dir>/status.json (read by dataflex-report)
    # and the sweep goes on; a single run still raises and exits non-zero.
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = hydra_cfg.runtime.output_dir
    if cfg.launcher.nproc_per_node > 1 and not under_torchrun():
        job = lambda: launch_workers(cfg, run_dir)  # noqa: E731
    else:
        job = lambda: run(cfg, run_dir)  # noqa: E731
    summary = guarded_run(job, run_dir, multirun=multirun, cfg=cfg, check=lambda: validate(cfg))
    if summary is None:
        return None  # a failed job; the Optuna sweeper records a non-float return as a failed trial
    logger.info(format_summary(summary))
    return summary["final_eval"].get("eval/loss")


def component_hint(argv: list[str]) -> str | None:
    """`component=X` that exists for other trainers but not for the chosen one: name the ones that do."""
    if any(a.startswith(("experiment=", "+experiment=")) for a in argv):
        return None  # the preset may choose the trainer: let Hydra compose and report
    chosen = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in ("trainer", "component"))
    trainer, component = chosen.get("trainer", "static"), chosen.get("component")
    if not component or any(c in trainer + component for c in ",()*"):
        return None
    folder = config_dir() / "components" / trainer
    known_elsewhere = (config_dir() / "component" / f"{component}.yaml").is_file()
    if not known_elsewhere or not folder.is_dir() or (folder / f"{component}.yaml").is_file():
        return None  # unknown names: Hydra's own error lists every component
    options = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
    return f"component={component} is not a component of trainer={trainer}; choose one of: {options}."


def main() -> None:
    """The `dataflex-run` entry point (also `python -m dataflex.cli` and `torchrun -m dataflex.cli`)."""
    hint = component_hint(sys.argv[1:])
    if hint:
        sys.exit(hint)
    from dataflex.preflight import preflight
    from dataflex.tracking.status import interrupted_message
    from dataflex.train.interrupt import TrainingInterrupted

    sys.argv = [sys.argv[0], *preflight(torchrun_prelude(sys.argv[1:]))]
    swept = _swept_keys(sys.argv[1:])
    if swept:
        os.environ[SWEPT_KEYS_ENV] = ",".join(sorted(swept))
    try:
        hydra_main()
    except SystemExit as exit_:
        from dataflex.tracking import sweep_callback

        if exit_.code not in (0, None) and sweep_callback.remove_if_empty(sweep_callback.current_sweep_dir):
            print(
                "dataflex-run: the sweep stopped before any job ran; its empty folder was removed.",
                file=sys.stderr,
            )
        raise
    except TrainingInterrupted as stop:  # status.json says `interrupted`; one line instead of a traceback
        print(interrupted_message(stop), file=sys.stderr)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:  # Ctrl-C before a run started (e.g. while Hydra composes)
        print("dataflex-run: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
