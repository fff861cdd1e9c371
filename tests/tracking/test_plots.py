"""Per-run PNG plots: which plots appear for which metrics, and that they hold the logged series."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tracking_helpers import DOMAINS, dynamic_records, write_metrics

from dataflex.tracking.plots import PlotTracker, plot_run, scalar, series, weight_values

ALL_PLOTS = {
    "train_loss.png",
    "eval_loss_per_domain.png",
    "train_loss_per_domain.png",
    "mixture_proportions.png",
    "selection_domain_fractions.png",
    "weight_histograms.png",
    "weight_stats.png",
}


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
    records = [
        {"step": 1, "eval/loss/a": "nan", "eval/loss/b": 1.5, "eval/loss/b/x": 9.0, "mixture/a": [1, 2]},
        {"step": 2, "eval/loss/a": 2.0},
    ]
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
    records = [
        {k: v for k, v in r.items() if k.startswith(("step", "loss", "eval/"))} for r in dynamic_records()
    ]
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
    out = subprocess.run(
        [sys.executable, "-m", "dataflex.tracking.plots", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "weight_histograms.png" in out and (tmp_path / "plots" / "weight_histograms.png").is_file()


def test_plots_command_names_a_dir_without_metrics(tmp_path, capsys):
    from dataflex.report import main

    with pytest.raises(SystemExit):
        main(["plots", str(tmp_path)])
    assert "no metrics.jsonl" in capsys.readouterr().err


class _Captured:
    """Keeps every figure a plot function draws (instead of closing it) to inspect its axes."""

    def __init__(self, monkeypatch):
        import dataflex.tracking.plots as plots

        self.figures = {}

        def keep(fig, path):  # (not rasterised: the drawn artists are what the tests read)
            self.figures[path.name] = fig
            return path

        import dataflex.tracking.compare as compare

        monkeypatch.setattr(plots, "_save", keep)
        monkeypatch.setattr(compare, "_save", keep)


def _mix_records(total=300, every=25):
    records = [{"step": 0, "mixture/a": 0.5, "mixture/b": 0.5}]
    for step in range(1, total + 1):
        r = {"step": step, "loss": 2.0}
        if step % every == 0 and step < total:
            r.update({"mixture/a": 0.5 + step / 1000, "mixture/b": 0.5 - step / 1000})
        records.append(r)
    return records


def test_proportions_are_steps_through_the_last_step(tmp_path, monkeypatch):
    """The last update is at 275 of 300: both panels still reach step 300, as step functions."""
    cap = _Captured(monkeypatch)
    write_metrics(tmp_path, _mix_records())
    plot_run(tmp_path)
    left, right = cap.figures["mixture_proportions.png"].axes[:2]
    for line in left.get_lines():
        assert line.get_drawstyle() == "steps-post" and line.get_xdata()[-1] == 300
        assert line.get_ydata()[-1] == line.get_ydata()[-2]  # the last proportion holds to the end
    assert right.get_xlim()[1] == 300
    stacked = right.collections[-1].get_paths()[0].vertices
    assert stacked[:, 0].max() == 300
    xs = sorted(set(stacked[:, 0].round(6)))
    assert 24.0 < min(x for x in xs if x > 0) <= 25.0  # a step at the first update, not a ramp from 0


def test_axes_say_what_and_in_which_unit_and_titles_name_the_run(tmp_path, monkeypatch):
    cap = _Captured(monkeypatch)
    write_metrics(tmp_path, dynamic_records())
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n      trainer: dynamic_mix\n      component: odm\n"
    )
    plot_run(tmp_path)
    assert set(cap.figures) == ALL_PLOTS
    for name, fig in cap.figures.items():
        titles = " ".join(
            [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
        )
        assert "dynamic_mix / odm" in titles, name
        for ax in fig.axes:
            if ax.axison and (ax.get_lines() or ax.patches or ax.collections):
                assert ax.get_ylabel(), (name, ax.get_title())
    assert "nats/token" in cap.figures["train_loss.png"].axes[0].get_ylabel()
    assert "nats/token" in cap.figures["eval_loss_per_domain.png"].axes[0].get_ylabel()


def test_selection_marks_each_domains_base_rate(tmp_path, monkeypatch):
    cap = _Captured(monkeypatch)
    records = [
        {
            "step": s,
            "select/domain_fraction/a": 0.7,
            "select/domain_fraction/b": 0.3,
            "select/pool_fraction/a": 0.25,
            "select/pool_fraction/b": 0.75,
        }
        for s in (10, 20)
    ]
    write_metrics(tmp_path, records)
    plot_run(tmp_path)
    ax = cap.figures["selection_domain_fractions.png"].axes[0]
    dashed = {
        round(line.get_ydata()[0], 6)
        for line in ax.get_lines()
        if line.get_linestyle() == "--" and len(line.get_ydata())
    }
    assert dashed == {0.25, 0.75}
    assert ax.get_ylim() == (0.0, 1.0)


def test_weight_histograms_leave_out_the_warmup(tmp_path):
    records = [
        {
            "step": s,
            "weight/active": float(s > 2),
            "weight/values": [1.0] * 4 if s <= 2 else [0.5, 1.5, 1.0, 1.0],
        }
        for s in (1, 2, 3, 4)
    ]
    assert [s for s, _ in weight_values(records)] == [3, 4]
    write_metrics(tmp_path, records[:2])
    assert "weight_histograms.png" not in {p.name for p in plot_run(tmp_path)}


def test_final_eval_bars_start_at_zero(tmp_path, monkeypatch):
    from tracking_helpers import make_job

    from dataflex.tracking.compare import compare_final_eval
    from dataflex.tracking.sweep import read_job

    cap = _Captured(monkeypatch)
    jobs = [
        read_job(
            make_job(
                tmp_path,
                f"{k}_x",
                [f"x={k}"],
                final={"eval/loss": 3.0 + k, "eval/loss/a": 3.0 + k},
                records=dynamic_records(),
            )
        )
        for k in range(2)
    ]
    compare_final_eval(jobs, tmp_path)
    assert cap.figures["compare_final_eval.png"].axes[0].get_ylim()[0] == 0.0
