from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# One intra-op thread per process: the CLI tests start subprocesses (and 2-rank runs) on a 2-core machine,
# where OpenMP oversubscription makes them many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Token stores built by the runs under test go to a throw-away cache, not the user's ~/.cache/dataflex.
if "DATAFLEX_CACHE" not in os.environ:
    import atexit
    import tempfile

    os.environ["DATAFLEX_CACHE"] = tempfile.mkdtemp(prefix="dataflex-test-cache-")
    atexit.register(shutil.rmtree, os.environ["DATAFLEX_CACHE"], True)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def compose():
    """Composes the real config (conf/) with Hydra's compose API, as `dataflex-run <overrides>` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import dataflex.cli  # noqa: F401  (registers schemas and resolvers)
    from dataflex.config.paths import config_dir

    def _compose(*overrides: str, return_hydra_config: bool = False):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)

    return _compose


def dataflex_run_cmd() -> list[str]:
    exe = shutil.which("dataflex-run")
    return [exe] if exe else [sys.executable, "-m", "dataflex.cli"]


@pytest.fixture
def cli(tmp_path):
    """Runs the installed `dataflex-run` in a temp cwd; returns the CompletedProcess. `fault="step:N"` or
    `"save:N"` SIGKILLs the run there, in every process (tests/fault_injection.py)."""

    def _run(
        *args: str,
        cwd: Path | None = None,
        timeout: int = 300,
        check: bool = True,
        env: dict | None = None,
        fault: str | None = None,
    ):
        env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
        if fault:  # armed in every process of the run (tests/fault_site/sitecustomize.py)
            site = str(REPO / "tests" / "fault_site")
            env["DATAFLEX_FAULT"] = fault
            env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
        proc = subprocess.run(
            dataflex_run_cmd() + list(args),
            cwd=cwd or tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"dataflex-run {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        return proc

    return _run
