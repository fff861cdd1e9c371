"""`dataflex-mixsearch`: the fit/propose step on a sweep read back from job dirs (fast, synthetic), and the
whole command end to end on the embedded data (slow: a Hydra multirun of 8 tiny proxy runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dataflex.mixing.laws import LogLinearLaw, sample_mixtures
from dataflex.mixing.search import fit_and_propose, main, parse_args, read_sweep

NAMES = ["a", "b", "c"]
LAW = LogLinearLaw(
    c=np.array([1.0, 1.5, 2.0]), k=np.ones(3), t=np.array([[-2.0, 0.5, 0], [0.3, -1.5, 0], [0, 0, 0]])
)


def _fake_sweep(root, n: int = 24) -> np.ndarray:
    """Job dirs as a finished multirun leaves them: mixture_history.json + summary.json with final eval."""
    r = sample_mixtures(np.full(3, 1 / 3), n, seed=4)
    y = LAW.predict(r)
    for i, (p, losses) in enumerate(zip(r, y)):
        job = root / "sweep" / f"{i}_job"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text("[]\n")
        history = {"domains": NAMES, "updates": [{"step": 0, "proportions": p.tolist(), "source": "init"}]}
        (job / "mixture_history.json").write_text(json.dumps(history))
        final = {f"eval/loss/{d}": float(v) for d, v in zip(NAMES, losses)}
        (job / "summary.json").write_text(json.dumps({"steps": 4, "final_eval": final}))
    return r


def test_read_sweep_and_fit_recover_the_law_and_its_optimum(tmp_path):
    r = _fake_sweep(tmp_path)
    got_r, got_y, labels = read_sweep(tmp_path / "sweep", NAMES)
    np.testing.assert_array_equal(got_r, r)
    assert labels[0] == "0_job" and len(labels) == 24
    args, _ = parse_args(["--out", str(tmp_path), "--law", "auto", "--max-proportion", "0.7"])
    result = fit_and_propose(NAMES, got_r, got_y, args, np.full(3, 1 / 3))
    assert result["law"]["kind"] == "log_linear"  # 24 runs, 5 folds: >= K + 2 per training fold
    assert max(result["held_out"]["mae"]) < 1e-6  # exact data
    reference = fit_and_propose(NAMES, got_r, got_y, args, np.full(3, 1 / 3))["proposal"]
    # the law the proposal used is the true one, so its objective is the true optimum under the cap: compare
    # with a fine grid of capped mixtures
    grid = np.array(
        [(x, z, 1 - x - z) for x in np.arange(0, 0.701, 0.002) for z in np.arange(0, 0.701, 0.002)]
    )
    grid = grid[(grid[:, 2] >= 0) & (grid[:, 2] <= 0.7)]
    assert reference["objective"] <= LAW.predict(grid).mean(1).min() + 1e-6
    assert max(reference["proportions"].values()) <= 0.7 + 1e-9


def test_unknown_target_is_refused(tmp_path):
    r = _fake_sweep(tmp_path, n=6)
    args, _ = parse_args(["--out", str(tmp_path), "--target", "z"])
    with pytest.raises(SystemExit, match="--target z"):
        fit_and_propose(NAMES, r, LAW.predict(r), args, np.full(3, 1 / 3))


TINY = (
    "trainer.logging_steps=2",
    "trainer.eval_steps=2",
    "trainer.max_eval_samples_per_domain=8",
    "trainer.per_device_train_batch_size=4",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
    "data.max_samples=64",
    "trainer.disable_tqdm=true",
    "trainer.save_final_model=false",
)


@pytest.mark.slow
def test_mixsearch_end_to_end_on_the_embedded_data(tmp_path):
    out = tmp_path / "search"
    cmd = [sys.executable, "-m", "dataflex.mixing.search", "--out", str(out), "--runs", "8", "--steps", "4"]
    cmd += ["--folds", "4", "--max-proportion", "0.5", "--", *TINY]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env={**os.environ})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "all 8 jobs completed" in proc.stdout + proc.stderr  # one Hydra multirun ran the proxies
    report = json.loads((out / "report.json").read_text())
    assert report["runs"] == 8 and report["held_out"]["kind"] == "linear"  # 6 runs per fold < K + 2
    assert all(np.isfinite(report["held_out"]["mae"]))
    preset = json.loads((out / "mixture.json").read_text())
    assert max(preset["proportions"]) <= 0.5 + 1e-9
    from dataflex.train.trainer.dynamic_mix import read_proportions_file

    names = ["greet", "arith", "reverse", "noise", "target"]
    assert read_proportions_file(str(out / "mixture.json"), names).sum() == pytest.approx(1.0)
    # refitting the same sweep gives the same preset
    first = (out / "mixture.json").read_text()
    assert (
        main(["--out", str(out), "--fit-only", "--folds", "4", "--max-proportion", "0.5", "--", *TINY]) == 0
    )
    assert (out / "mixture.json").read_text() == first
