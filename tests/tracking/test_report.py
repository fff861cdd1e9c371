"""`dataflex-report` on synthetic job dirs: rows, statuses, aggregates, CSV/markdown, comparison plots."""

from __future__ import annotations

import csv
import math
import shutil

import pytest
from tracking_helpers import DOMAINS, dynamic_records, make_job

from dataflex.report import main, swept_overrides
from dataflex.tracking.sweep import collect_jobs, find_job_dirs, read_job

COMMON = ["trainer.max_steps=8", "data.max_samples=64"]


def _final(losses):
    return {"eval/loss": sum(losses) / len(losses), **{f"eval/loss/{d}": v for d, v in zip(DOMAINS, losses)}}


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun_outputs" / "2026-01-01" / "10-00-00"
    records = dynamic_records()
    make_job(
        root,
        "0_component=a",
        ["component=a", *COMMON],
        final=_final([1.0, 2.0, 3.0]),
        records=records,
        status={"status": "completed", "elapsed_s": 3.0},
        wall=2.5,
        samples_per_s=40.0,
    )
    make_job(
        root,
        "1_component=b",
        ["component=b", *COMMON],
        final=_final([1.5, 1.8, 2.4]),
        records=records,
        wall=3.5,
        samples_per_s=30.0,
    )  # no status.json (older run): completed from summary.json
    make_job(
        root,
        "2_component=c",
        ["component=c", *COMMON],
        status={"status": "failed", "error": "ValueError: component.eta must be > 0", "elapsed_s": 0.1},
    )
    make_job(
        root, "3_component=d", ["component=d", *COMMON], records=records[:3], status={"status": "running"}
    )  # killed mid-run
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_jobs_are_read_in_job_number_order_with_their_status(sweep):
    jobs = collect_jobs([sweep])
    assert [j.label for j in jobs] == ["0_component=a", "1_component=b", "2_component=c", "3_component=d"]
    assert [j.status for j in jobs] == ["completed", "completed", "failed", "incomplete"]
    assert jobs[2].error == "ValueError: component.eta must be > 0"
    a, b = jobs[0], jobs[1]
    assert a.domain_losses == {"greet": 1.0, "arith": 2.0, "noise": 3.0}
    assert a.average_loss == pytest.approx(2.0) and a.worst == ("noise", 3.0)
    assert b.average_loss == pytest.approx((1.5 + 1.8 + 2.4) / 3) and b.worst == ("noise", 2.4)
    assert a.wall_time_s == 2.5 and b.samples_per_s == 30.0
    assert math.isnan(jobs[2].average_loss)


def test_killed_job_reports_its_last_evaluation(sweep):
    job = read_job(sweep / "3_component=d")
    last_eval = [r for r in dynamic_records()[:3] if "eval/loss/greet" in r][-1]
    assert job.domain_losses["greet"] == last_eval["eval/loss/greet"]


def test_interrupted_job_reports_its_last_eval_after_step_0_not_the_start_eval(tmp_path):
    records = dynamic_records()
    resume = f"dataflex-run --resume {tmp_path / 'sweep' / '0_x=1'}"
    status = {"status": "interrupted", "step": 5, "signal": "SIGTERM", "resume": resume}
    make_job(tmp_path / "sweep", "0_x=1", ["x=1"], records=records[:6], status=status)
    job = read_job(tmp_path / "sweep" / "0_x=1")
    assert job.status == "interrupted" and job.eval_step == 4
    assert job.final_eval["eval/loss"] == records[4]["eval/loss"] != records[0]["eval/loss"]
    assert job.error == f"SIGTERM after step 5; resume: {resume}"
    make_job(tmp_path / "sweep", "1_x=2", ["x=2"], records=records[:2], status={**status, "step": 1})
    early = read_job(tmp_path / "sweep" / "1_x=2")
    assert early.final_eval == {} and early.eval_step is None  # only the step-0 eval: no result yet
    main([str(tmp_path / "sweep"), "--no-plots"])
    md = (tmp_path / "sweep" / "report" / "report.md").read_text()
    assert "1 interrupted" not in md and "2 interrupted" in md and "(interrupted): SIGTERM after step 5" in md


def test_only_varying_overrides_are_shown(sweep):
    jobs = collect_jobs([sweep])
    assert swept_overrides(jobs) == [["component=a"], ["component=b"], ["component=c"], ["component=d"]]
    assert swept_overrides(jobs[:1]) == [["component=a", *COMMON]]


def test_report_writes_csv_markdown_and_plots(sweep, capsys):
    assert main([str(sweep)]) == 0
    out = sweep / "report"
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["job"] for r in rows] == ["0_component=a", "1_component=b", "2_component=c", "3_component=d"]
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "incomplete"]
    assert float(rows[0]["eval_loss/arith"]) == 2.0 and float(rows[0]["eval_loss_avg"]) == pytest.approx(2.0)
    assert rows[1]["worst_domain"] == "noise" and float(rows[1]["eval_loss_worst"]) == 2.4
    assert rows[2]["eval_loss_avg"] == "" and "component.eta" in rows[2]["error"]
    assert rows[0]["all_overrides"] == " ".join(["component=a", *COMMON])
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header + one row per job
    assert (
        "| 1_component=b | `component=b` | completed | 1.5000 | **1.8000** | **2.4000** | **1.9000** "
        "| **2.4000 (noise)** | 8 | 3.5 | 30.0 |"
    ) in md  # bold: the best completed value of each loss column
    assert "| 0_component=a | `component=a` | completed | **1.0000** | 2.0000 |" in md
    assert "2_component=c` (failed): ValueError: component.eta must be > 0" in md
    for name in (
        "compare_eval_loss.png",
        "compare_final_eval.png",
        "compare_train_loss.png",
        "compare_proportions.png",
        "compare_selection.png",
    ):
        assert (out / name).is_file() and f"({name})" in md
    assert "| 0_component=a |" in capsys.readouterr().out


def test_several_sweeps_in_one_table(sweep, tmp_path):
    other = tmp_path / "other_sweep"
    make_job(other, "0_seed=1", ["seed=1"], final=_final([1.0, 1.0, 1.0]))
    main([str(sweep), str(other), "--out", str(tmp_path / "merged"), "--no-plots"])
    rows = list(csv.DictReader((tmp_path / "merged" / "report.csv").open()))
    assert [r["job"] for r in rows][-2:] == ["10-00-00/3_component=d", "other_sweep/0_seed=1"]
    assert not list((tmp_path / "merged").glob("*.png"))


def test_jobs_with_their_own_output_dir_are_listed_once(tmp_path):
    sweep = tmp_path / "sweep"
    out = sweep / "odm"  # trainer.output_dir=${hydra:sweep.dir}/odm
    make_job(sweep, "odm", [], final=_final([1.0, 2.0, 3.0]), records=dynamic_records())
    shutil.rmtree(out / ".hydra")
    make_job(
        sweep,
        "0_+experiment_mixing=odm",
        ["+experiment/mixing=odm"],
        status={"status": "completed", "run_dir": str(out)},
    )
    jobs = collect_jobs([sweep])
    assert [j.label for j in jobs] == ["0_+experiment_mixing=odm"]
    assert jobs[0].status == "completed" and jobs[0].average_loss == pytest.approx(2.0)
    assert jobs[0].records == dynamic_records()


def test_a_single_run_dir_is_one_row(tmp_path):
    run = make_job(tmp_path, "run", ["trainer.max_steps=8"], final=_final([1.0, 2.0, 4.0]))
    assert find_job_dirs(run) == [run]
    main([str(run), "--no-plots"])
    rows = list(csv.DictReader((run / "report" / "report.csv").open()))
    assert len(rows) == 1 and rows[0]["worst_domain"] == "noise"


def test_empty_or_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no job dirs"):
        main([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="multirun_outputs/<date>/<time>"):
        main([str(tmp_path / "nope")])
