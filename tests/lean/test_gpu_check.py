"""experiments/benchmarks/gpu/run.sh: valid bash, and its CPU dry run writes one table with a row per job and
variant (the liger rows record why they cannot run here instead of silently training something else)."""

from __future__ import annotations

import csv
import os
import subprocess

import pytest

from helpers import REPO

SCRIPT = REPO / "experiments" / "benchmarks" / "gpu" / "run.sh"


def test_run_sh_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.slow
def test_cpu_dry_run_writes_the_table(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["job"], r["variant"]) for r in rows] == [
        (job, variant)
        for job in ("static", "dynamic_mix/odm", "dynamic_select/less", "dynamic_weight/loss")
        for variant in ("plain", "chunked+gc", "liger+gc")
    ]
    for row in rows:
        if row["variant"] == "liger+gc":
            assert "liger-kernel needs a CUDA GPU" in row["error"]
        else:
            assert row["error"] == "" and float(row["steps_per_s"]) > 0 and float(row["tokens_per_s"]) > 0
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("DRY RUN") and table.count("\n| ") == 13  # header + 12 rows
