"""End to end through `dataflex-run -m` and `dataflex-report`: failures, launchers, wandb identity."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_records import config_of, history_rows, run_record, wait_until_written

from dataflex.tracking.sweep import collect_jobs

from helpers import FAST, PLOTTED, REPO

pytestmark = pytest.mark.slow


def _sweep_dir(tmp_path: Path) -> Path:
    sweeps = list((tmp_path / "multirun_outputs").glob("*/*"))
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def _report(sweep: Path, *args: str) -> list[dict]:
    exe = shutil.which("dataflex-report")
    cmd = [exe] if exe else [sys.executable, "-m", "dataflex.report"]
    subprocess.run([*cmd, str(sweep), *args], check=True, capture_output=True, text=True)
    with (sweep / "report" / "report.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_failing_job_does_not_stop_the_sweep_and_the_report_marks_it(cli, tmp_path):
    proc = cli("-m", "trainer.learning_rate=1e-3,3e-3,-1,2e-3", *FAST)
    assert "the sweep goes on" in proc.stdout + proc.stderr
    sweep = _sweep_dir(tmp_path)
    rows = _report(sweep)
    assert [r["job"] for r in rows] == [
        "0_trainer.learning_rate=0.001",
        "1_trainer.learning_rate=0.003",
        "2_trainer.learning_rate=-1",
        "3_trainer.learning_rate=0.002",
    ]
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "completed"]
    assert "trainer.learning_rate must be >= 0" in rows[2]["error"] and rows[2]["eval_loss_avg"] == ""
    for row in (rows[0], rows[1], rows[3]):
        summary = json.loads((Path(row["job_dir"]) / "summary.json").read_text())
        final = summary["final_eval"]
        domains = [k.removeprefix("eval/loss/") for k in final if k.startswith("eval/loss/")]
        assert len(domains) == 5
        for d in domains:
            assert float(row[f"eval_loss/{d}"]) == pytest.approx(final[f"eval/loss/{d}"])
        losses = [final[f"eval/loss/{d}"] for d in domains]
        assert float(row["eval_loss_avg"]) == pytest.approx(sum(losses) / 5)
        assert float(row["eval_loss_worst"]) == pytest.approx(max(losses))
        assert float(row["wall_time_s"]) == pytest.approx(summary["wall_time_s"])
        assert float(row["samples_per_s"]) == pytest.approx(summary["train_samples_per_s"])
    report_md = (sweep / "report" / "report.md").read_text()
    assert "2_trainer.learning_rate=-1` (failed)" in report_md
    assert (sweep / "report" / "compare_eval_loss.png").is_file()
    assert (sweep / "report" / "compare_final_eval.png").is_file()


def test_a_failing_single_run_still_exits_non_zero(cli, tmp_path):
    proc = cli("trainer.learning_rate=-1", *FAST, check=False)
    assert proc.returncode != 0 and "trainer.learning_rate" in proc.stderr
    status = json.loads(next((tmp_path / "outputs").glob("*/*/status.json")).read_text())
    assert status["status"] == "failed"


def test_joblib_launcher_runs_jobs_in_separate_processes(cli, tmp_path):
    cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "trainer.learning_rate=1e-3,3e-3",
        *FAST,
        timeout=600,
    )
    jobs = collect_jobs([_sweep_dir(tmp_path)])
    assert [j.label for j in jobs] == ["0_trainer.learning_rate=0.001", "1_trainer.learning_rate=0.003"]
    assert [j.status for j in jobs] == ["completed", "completed"]
    pids = {json.loads((j.job_dir / "status.json").read_text())["pid"] for j in jobs}
    assert len(pids) == 2


def test_submitit_local_launcher(cli, tmp_path):
    cli(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "trainer.learning_rate=1e-3,-1",
        *FAST,
        timeout=600,
    )
    jobs = collect_jobs([_sweep_dir(tmp_path)])
    assert [j.status for j in jobs] == ["completed", "failed"]
    assert jobs[0].domain_losses and "learning_rate" in jobs[1].error


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """No key, no netrc, no WANDB_MODE: logger=wandb must pick offline by itself."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))


def test_wandb_sweep_group_name_tags_and_config(cli, tmp_path, no_credentials):
    proc = cli("-m", "logger=wandb", "trainer.learning_rate=1e-3,3e-3", *FAST)
    assert (proc.stdout + proc.stderr).count("wandb: no credentials") == 2
    sweep = _sweep_dir(tmp_path)
    for job in collect_jobs([sweep]):
        run_file = wait_until_written(next(job.job_dir.glob("wandb/offline-run-*/run-*.wandb")))
        run = run_record(run_file)
        assert run.run_group == f"{sweep.parent.name}/{sweep.name}"
        assert run.display_name == job.label
        assert {"trainer:static", "component:none", "data:default", "model:tiny"} <= set(run.tags)
        config = config_of(run)
        assert config["trainer"]["learning_rate"] == float(job.label.split("=")[1])
        assert config["model"]["hidden_size"] == 32
        evals = [r for r in history_rows(run_file) if "eval/loss/noise" in r]
        assert evals[-1]["eval/loss/noise"] == pytest.approx(job.domain_losses["noise"])


@pytest.mark.skipif(
    not (REPO / "conf" / "trainer" / "dynamic_mix.yaml").is_file(), reason="no dynamic_mix yet"
)
def test_dynamic_mix_odm_with_wandb_offline(cli, tmp_path, no_credentials):
    """The acceptance run of issue 7, tiny: proportions series in the offline run and the chart table."""
    fast = [o for o in PLOTTED if not o.startswith(("trainer.max_steps", "trainer.logging_steps"))]
    cli(
        "trainer=dynamic_mix",
        "component=odm",
        "logger=wandb",
        "trainer.warmup_step=1",
        "trainer.update_step=1",
        "trainer.update_times=3",
        "trainer.logging_steps=1",
        *fast,
    )
    run_dir = next((tmp_path / "outputs").glob("*/*"))
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in metrics if any(k.startswith("mixture/") for k in r)]
    assert logged, "the dynamic_mix trainer logged no mixture/<domain> metrics"
    run_file = wait_until_written(next(run_dir.glob("wandb/offline-run-*/run-*.wandb")))
    rows = [r for r in history_rows(run_file) if any(k.startswith("mixture/") for k in r)]
    assert [r["global_step"] for r in rows] == [r["step"] for r in logged]
    assert rows[-1]["mixture/target"] == pytest.approx(logged[-1]["mixture/target"])
    table = next(run_file.parent.glob("files/media/table/charts/mixture_proportions_table*.json"))
    data = json.loads(table.read_text())["data"]
    assert {k for _, k, _ in data} == {"greet", "arith", "reverse", "noise", "target"}
    assert (run_dir / "plots" / "mixture_proportions.png").is_file()


def test_optuna_sweeper_minimises_the_final_eval_loss(cli, tmp_path):
    """The optional extra `optuna`: the objective is the job's final eval/loss; a failed trial is a failed
    trial, not the end of the search."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from omegaconf import OmegaConf

    cli(
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.sampler.seed=1",
        "hydra.sweeper.n_trials=4",
        "trainer.learning_rate=choice(-1,0.001)",
        *FAST,
    )
    sweep = _sweep_dir(tmp_path)
    jobs = collect_jobs([sweep])
    assert len(jobs) == 4
    done = [j for j in jobs if j.status == "completed"]
    failed = [j for j in jobs if j.status == "failed"]
    assert done and failed and all(j.label.endswith("=-1") for j in failed)  # seed 1 samples -1 once
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(j.final_eval["eval/loss"] for j in done))
