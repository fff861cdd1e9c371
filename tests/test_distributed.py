"""Two gloo processes on CPU: one composed config, one run dir, disjoint shares, one process's update."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers import FAST, run_in_process

pytestmark = pytest.mark.slow

RUN = [o for o in FAST if "per_device_train_batch_size" not in o] + [
    "trainer.max_steps=3",
    "trainer.lr_scheduler_type=constant",
    "trainer.eval_steps=0",
]


def _weights(run_dir):
    return load_file(run_dir / "final_model" / "model.safetensors")


def test_two_processes_match_one_with_the_same_global_batch(cli, compose, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_in_process(compose, one, *RUN, "trainer.per_device_train_batch_size=8")
    proc = cli(
        *RUN,
        "trainer.per_device_train_batch_size=4",
        "launcher.nproc_per_node=2",
        f"trainer.output_dir={two}",
    )
    assert "2 process(es) x 4" in proc.stdout + proc.stderr
    a, b = _weights(one), _weights(two)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=3e-5)
    steps = [json.loads(x)["step"] for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "metrics written more than once"
    # The two-process job composed once: one Hydra dir (the parent's, the output dir) holding the config the
    # ranks ran, and no stray outputs/<date>/<time>/.
    assert (two / ".hydra" / "resolved_config.yaml").is_file() and not (tmp_path / "outputs").exists()


def test_plain_torchrun_shares_one_run_dir(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "dataflex.cli",
        *RUN,
        "trainer.per_device_train_batch_size=4",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = list((tmp_path / "outputs").glob("*/*"))
    assert len(run_dirs) == 1, run_dirs
    assert (run_dirs[0] / ".hydra" / "config.yaml").is_file() and (run_dirs[0] / "summary.json").is_file()
    steps = [json.loads(x)["step"] for x in (run_dirs[0] / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))
