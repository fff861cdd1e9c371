"""Per-run PNG plots: which plots appear for which metrics, and that they hold the logged series."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tracking_helpers import DOMAINS, dynamic_records, write_metrics

from dataflex.tracking.plots import PlotTracker, plot_run, scalar, series, weight_values

ALL_PLOTS = {"train_loss.png", "eval_loss_per_domain.png", "train_loss_per_domain.png", "mixture_proportions.png",
             "selection_domain_fractions.png", "weight_histograms.png", "weight_stats.png"}


def _png_shape(path):
    from matplotlib.image import imread

    return imread(path).shape


def test_series_reads_each_prefix_at_its_own_steps():
    records = dynamic_records(steps=6, update_every=3)
    mixture = series(records, "mixture/")
    assert list(mixture) == list(DOMAINS)
    assert mixture["greet"] == ([3, 6], [pytest.approx(0.26), pytest.approx(0.32)])
    evals = series(records, "eval/loss/")
    assert set(evals) == set(DOMAINS) and evals["arith"][0] == [0, 3, 6]
    assert scalar(records, "loss")[0] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in weight_values(records)] == [3, 6]


def test_series_skips_non_finite_and_nested_keys():
    records = [{"step": 1, "eval/loss/a": "nan", "eval/loss/b": 1.5, "eval/loss/b/x": 9.0, "mixture/a": [1, 2]},
               {"step": 2, "eval/loss/a": 2.0}]
    assert series(records, "eval/loss/") == {"b": ([1], [1.5]), "a": ([2], [2.0])}
    assert series(records, "mixture/") == {}


def test_dynamic_run_gets_every_plot(tmp_path):
    write_metrics(tmp_path, dynamic_records())
    written = plot_run(tmp_path)
    assert {p.name for p in written} == ALL_PLOTS
    for path in written:
        height, width, _ = _png_shape(path)
        assert height >= 200 and width >= 300


def test_static_run_gets_only_loss_plots(tmp_path):
    records = [{k: v for k, v in r.items() if k.startswith(("step", "loss", "eval/"))} for r in dynamic_records()]
    write_metrics(tmp_path, records)
    assert {p.name for p in plot_run(tmp_path)} == {"train_loss.png", "eval_loss_per_domain.png"}


def test_plot_tracker_draws_at_finish_only(tmp_path):
    tracker = PlotTracker(tmp_path)
    tracker.finish()  # nothing logged yet: no metrics.jsonl, no plots, no error
    assert not (tmp_path / "plots").exists()
    write_metrics(tmp_path, dynamic_records())
    tracker.log({"loss": 1.0}, step=1)
    assert not (tmp_path / "plots").exists()
    tracker.finish()
    assert (tmp_path / "plots" / "mixture_proportions.png").is_file()


def test_plots_command_redraws(tmp_path):
    write_metrics(tmp_path, dynamic_records())
    out = subprocess.run([sys.executable, "-m", "dataflex.tracking.plots", str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout
    assert "weight_histograms.png" in out and (tmp_path / "plots" / "weight_histograms.png").is_file()


def test_plots_command_names_a_dir_without_metrics(tmp_path, capsys):
    from dataflex.report import main

    with pytest.raises(SystemExit):
        main(["plots", str(tmp_path)])
    assert "no metrics.jsonl" in capsys.readouterr().err
