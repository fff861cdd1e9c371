"""End to end through the installed commands: `dataflex-run trainer=dynamic_mix ...`, the spec's custom mixer
from a user package on PYTHONPATH, the `dataflex-doremi` chain, and the mixing-study sweep (scaled down)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mix_helpers import NAMES, write_user_package

from dataflex.config.paths import config_dir
from dataflex.tracking import read_metrics

from helpers import FAST, PLOTTED

pytestmark = pytest.mark.slow

FAST_MIX = tuple(o for o in FAST if not o.startswith("trainer.max_steps"))
PLOTTED_MIX = tuple(o for o in PLOTTED if not o.startswith("trainer.max_steps"))


def only_run_dir(root: Path) -> Path:
    found = [p.parent for p in root.glob("outputs/*/*/metrics.jsonl")]
    assert len(found) == 1, found
    return found[0]


def test_odm_run_through_the_cli(cli, tmp_path):
    proc = cli(
        "trainer=dynamic_mix",
        "component=odm",
        *PLOTTED_MIX,
        "trainer.warmup_step=2",
        "trainer.update_step=2",
        "trainer.update_times=2",
    )
    run_dir = only_run_dir(tmp_path)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if "mixture/noise" in r] == [0, 2, 4]
    losses = [{k for k in r if k.startswith("train/loss/")} for r in records if r["step"] > 0]
    assert len([x for x in losses if x]) == 6  # every step (batch 4: 4 of the 5 domains each)
    assert set().union(*losses) == {f"train/loss/{d}" for d in NAMES}
    assert any(f"eval/loss/{d}" in r for r in records for d in NAMES)
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 6
    assert (run_dir / "mixture_history.json").is_file() and not (run_dir / "mixture_history.png").exists()
    assert (run_dir / "plots" / "mixture_proportions.png").is_file()  # the one proportions plot
    assert "dynamic_mix: mixer OdmMixer" in proc.stdout + proc.stderr


def test_spec_random_mixer_from_a_user_package(cli, tmp_path):
    write_user_package(tmp_path / "src", "user_mixers")
    env = {"PYTHONPATH": f"{tmp_path / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    np.random.seed(42)
    raw = np.random.random(5)
    expected = raw / raw.sum()
    runs = {
        "by_name": (
            "component=custom",
            "component.name=random",
            "component.module=user_mixers.random_mixer",
            "+component.params.seed=42",
        ),
        "by_target": (
            "component=custom",
            "component._target_=user_mixers.random_mixer.RandomMixer",
            "+component.seed=42",
        ),
    }
    for label, overrides in runs.items():
        out = tmp_path / label
        proc = cli(
            "trainer=dynamic_mix",
            *overrides,
            *FAST_MIX,
            "trainer.warmup_step=1",
            "trainer.update_step=1",
            "trainer.update_times=1",
            f"trainer.output_dir={out}",
            env=env,
        )
        assert "[RandomMixer] Step 1 Generated proportions" in proc.stdout + proc.stderr
        record = [r for r in read_metrics(out / "metrics.jsonl") if r["step"] == 1][0]
        np.testing.assert_allclose([record[f"mixture/{d}"] for d in NAMES], expected)


def test_dataflex_doremi_chains_the_three_steps(tmp_path):
    exe = shutil.which("dataflex-doremi")
    cmd = [exe] if exe else [sys.executable, "-m", "dataflex.train.mixer.doremi_pipeline"]
    work = tmp_path / "work"
    proc = subprocess.run(
        cmd + ["--workdir", str(work), "--steps", "3", *FAST_MIX],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    weights = json.loads((work / "proxy" / "doremi_weights.json").read_text())
    assert weights["domains"] == NAMES and weights["num_updates"] == 3
    main_hist = json.loads((work / "main" / "mixture_history.json").read_text())
    np.testing.assert_allclose(main_hist["updates"][0]["proportions"], weights["proportions"])
    assert (work / "reference" / "final_model" / "config.json").is_file()
    assert "DoReMi domain weights" in proc.stdout


def test_missing_reference_fails_step_two(cli, tmp_path):
    proc = cli("experiment=doremi_step2", *FAST_MIX, "trainer.update_times=2", check=False)
    assert proc.returncode != 0
    assert "component.reference_model_path=doremi/reference/final_model: no such folder" in proc.stderr


def test_mixing_study_sweep_scaled_down(cli, tmp_path):
    """The real study presets, with 6 instead of 300 steps (a copy of conf/ with the numbers scaled down)."""
    conf = tmp_path / "conf"
    shutil.copytree(config_dir(), conf)
    scale = {
        r": 300$": ": 6",
        "warmup_step: 50": "warmup_step: 2",
        "update_step: 25": "update_step: 2",
        "update_times: 10": "update_times: 2",
    }
    for path in (conf / "experiment" / "mixing").glob("*.yaml"):
        text = path.read_text()
        for pattern, repl in scale.items():
            text = re.sub(pattern, repl, text, flags=re.M)
        path.write_text(text)
    cli("-cp", str(conf), "-cn", "config", "-m", "experiment=mixing_study", *FAST_MIX, timeout=1200)
    sweep = next((tmp_path / "multirun_outputs").glob("*/*"))
    for method in ("uniform", "stratified", "random", "odm", "odm_progress", "doremi_proxy", "doremi"):
        assert (sweep / method / "summary.json").is_file(), method
    weights = json.loads((sweep / "doremi_proxy" / "doremi_weights.json").read_text())
    doremi = json.loads((sweep / "doremi" / "mixture_history.json").read_text())
    np.testing.assert_allclose(doremi["updates"][0]["proportions"], weights["proportions"])
    odm = json.loads((sweep / "odm" / "mixture_history.json").read_text())
    assert len(odm["updates"]) == 1 + 6  # init + every step (warmup 0, update_step 1)
