"""Comparison plots across the jobs of a sweep (written by `dataflex-report` next to the table)."""

from __future__ import annotations

import math
from pathlib import Path

from dataflex.tracking.plots import MIXTURE, SELECT, _lines, _save, pyplot, scalar, series, stacked_area
from dataflex.tracking.sweep import JobResult


def _short(job: JobResult, width: int = 48) -> str:
    return job.label if len(job.label) <= width else job.label[: width - 1] + "…"


def _grid(n: int, cols: int = 3, size: tuple[float, float] = (4.2, 3.4)):
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def compare_eval_loss(jobs: list[JobResult], out: Path) -> Path | None:
    """One panel per domain (+ all domains): eval loss over steps, one line per job."""
    domains = list(dict.fromkeys(d for j in jobs for d in series(j.records, "eval/loss/")))
    if not domains:
        return None
    keys = [("all domains", "eval/loss")] + [(d, f"eval/loss/{d}") for d in domains]
    fig, axes = _grid(len(keys))
    for ax, (title, key) in zip(axes, keys):
        _lines(
            ax,
            {_short(j): scalar(j.records, key) for j in jobs if scalar(j.records, key)[0]},
            ylabel="eval loss (nats/token)",
        )
        ax.set_title(f"eval loss: {title}", fontsize="medium")
        if ax is not axes[0] and ax.get_legend():
            ax.get_legend().remove()
    return _save(fig, out / "compare_eval_loss.png")


def compare_final_eval(jobs: list[JobResult], out: Path) -> Path | None:
    """Grouped bars: final eval loss per domain and the average, one bar per job."""
    done = [j for j in jobs if j.domain_losses]
    if not done:
        return None
    domains = list(dict.fromkeys(d for j in done for d in j.domain_losses)) + ["avg"]
    width = 0.8 / len(done)
    fig, ax = pyplot().subplots(figsize=(max(6.0, 1.2 * len(domains) + 0.3 * len(done)), 4.2))
    for k, job in enumerate(done):
        values = [job.domain_losses.get(d, math.nan) for d in domains[:-1]] + [job.average_loss]
        ax.bar(
            [i + k * width - 0.4 + width / 2 for i in range(len(domains))], values, width, label=_short(job)
        )
    ax.set_xticks(range(len(domains)), domains)
    ax.set_ylabel("final eval loss (nats/token)")
    ax.set_ylim(bottom=0)  # bars start at zero: their lengths compare
    ax.set_title("final eval loss per domain")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out / "compare_final_eval.png")


def compare_train_loss(jobs: list[JobResult], out: Path) -> Path | None:
    data = {_short(j): scalar(j.records, "loss") for j in jobs if scalar(j.records, "loss")[0]}
    if not data:
        return None
    fig, ax = pyplot().subplots(figsize=(7, 4))
    _lines(ax, data, ylabel="training loss (nats/token)")
    ax.set_title("train loss")
    return _save(fig, out / "compare_train_loss.png")


def compare_proportions(jobs: list[JobResult], out: Path) -> Path | None:
    """Side by side, one panel per job: the mixture proportions over steps (stacked)."""
    mixed = [(j, series(j.records, MIXTURE)) for j in jobs]
    mixed = [(j, s) for j, s in mixed if s]
    if not mixed:
        return None
    fig, axes = _grid(len(mixed), cols=4)
    for ax, (job, data) in zip(axes, mixed):
        stacked_area(ax, data, max((int(r["step"]) for r in job.records), default=None))
        ax.set_title(_short(job, 40), fontsize="small")
    axes[-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("mixture proportions over steps")
    return _save(fig, out / "compare_proportions.png")


def compare_selection(jobs: list[JobResult], out: Path) -> Path | None:
    """Side by side, one panel per job: the selected samples' domain fractions at each update."""
    picked = [(j, series(j.records, SELECT)) for j in jobs]
    picked = [(j, s) for j, s in picked if s]
    if not picked:
        return None
    fig, axes = _grid(len(picked), cols=4)
    for ax, (job, data) in zip(axes, picked):
        _lines(ax, data, ylabel="share of the selected samples")
        ax.set_xlabel("step of the selection update")
        ax.set_ylim(0, 1)
        ax.set_title(_short(job, 40), fontsize="small")
        if ax is not axes[-1] and ax.get_legend():
            ax.get_legend().remove()
    fig.suptitle("selected-sample domain fractions per update")
    return _save(fig, out / "compare_selection.png")


COMPARISONS = (
    compare_eval_loss,
    compare_final_eval,
    compare_train_loss,
    compare_proportions,
    compare_selection,
)


def comparison_plots(jobs: list[JobResult], out: Path) -> list[Path]:
    return [path for plot in COMPARISONS if (path := plot(jobs, out)) is not None]
