"""Multi-process runs: `dataflex-run launcher.nproc_per_node=N` and plain `torchrun -m dataflex.cli`.

- `launcher.nproc_per_node=N`: Hydra composes (and validates) the config once in the parent; the resolved
  config is written to `<run dir>/.hydra/resolved_config.yaml` and `torchrun` starts N workers
  (`python -m dataflex.worker`) that all use that run dir; rank 0 alone writes metrics, logs and models.
- plain `torchrun --nproc_per_node N -m dataflex.cli ...`: every rank runs Hydra, so before composing the
  ranks agree on one timestamp (→ one run dir) and ranks > 0 write no `.hydra/` and no log file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

STAMP_ENV = "DATAFLEX_RUN_STAMP"
_STAMP_FORMAT = "%Y-%m-%d %H-%M-%S-%f"
_process_start = datetime.now()


def run_time(fmt: str) -> str:
    """The run's start time formatted (resolver `dataflex_now`): shared by all torchrun ranks."""
    stamp = os.environ.get(STAMP_ENV)
    moment = datetime.strptime(stamp, _STAMP_FORMAT) if stamp else _process_start
    return moment.strftime(fmt)


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def torchrun_prelude(argv: list[str]) -> list[str]:
    """Under torchrun: join the process group now, share rank 0's start time, and keep ranks > 0 from
    writing Hydra outputs. Returns the (possibly extended) argv for Hydra."""
    if not under_torchrun() or STAMP_ENV in os.environ:
        return argv
    import torch
    import torch.distributed as dist

    from dataflex.train.interrupt import signals_to_main_thread

    if not dist.is_initialized():
        with signals_to_main_thread():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    box = [_process_start.strftime(_STAMP_FORMAT)]
    dist.broadcast_object_list(box, src=0)
    os.environ[STAMP_ENV] = box[0]
    if dist.get_rank() > 0:
        argv = argv + [
            "hydra.output_subdir=null",
            "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled",
        ]
    return argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _run_forwarding_signals(cmd: list[str], env: dict[str, str]) -> tuple[int, str | None]:
    """Runs torchrun in its own session, so a terminal's Ctrl-C reaches only this process, and forwards
    SIGINT/SIGTERM to the ranks themselves: they stop together after the same step (see
    dataflex.train.interrupt) and exit cleanly, and torchrun exits without a crash report. A second signal
    kills them. Returns (exit code, name of the first signal received or None)."""
    import psutil

    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    received: list[str] = []

    def forward(signum, frame) -> None:
        received.append(signal.Signals(signum).name)
        try:
            targets = psutil.Process(proc.pid).children(recursive=True) or [psutil.Process(proc.pid)]
        except psutil.NoSuchProcess:
            return
        for target in targets:
            try:
                target.send_signal(signum if len(received) == 1 else signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    try:
        returncode = proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return returncode, (received[0] if received else None)


def launch_workers(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Runs `launcher.nproc_per_node` torchrun ranks on the composed config; returns rank 0's summary."""
    from dataflex.run import validate

    validate(cfg)
    run_dir = Path(run_dir)
    config_file = run_dir / ".hydra" / "resolved_config.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    port = cfg.launcher.master_port or _free_port()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={cfg.launcher.nproc_per_node}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        "-m",
        "dataflex.worker",
        str(config_file),
        str(run_dir),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    returncode, signal_name = _run_forwarding_signals(cmd, env)
    status = _read_status(run_dir)
    if status.get("status") == "interrupted":
        from dataflex.train.interrupt import TrainingInterrupted

        raise TrainingInterrupted(
            int(status.get("step", 0)),
            signal_name or status.get("signal", "SIGTERM"),
            status.get("checkpoint"),
        )
    if signal_name:
        from dataflex.train.interrupt import TrainingInterrupted

        raise TrainingInterrupted(0, signal_name)  # stopped before training began
    if returncode != 0:
        raise RuntimeError(
            f"torchrun with {cfg.launcher.nproc_per_node} processes failed (exit {returncode}); "
            f"see {run_dir / 'dataflex.log'} and the output above."
        )
    summary_file = Path(cfg.trainer.output_dir or run_dir) / "summary.json"
    return json.loads(summary_file.read_text())
