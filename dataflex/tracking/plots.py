"""PNG plots of one run's metrics.jsonl, drawn at the end of the run and on demand:

    python -m dataflex.tracking.plots RUN_DIR      (or: dataflex-report plots RUN_DIR)

Each plot is drawn only when its metrics exist (a static run has no mixture plot). Keys read:
`loss`, `eval/loss`, `eval/loss/<domain>`, `train/loss/<domain>`, `mixture/<domain>`, `select/domain_fraction/<domain>`,
`weight/values` (list of floats), `weight/min|max|entropy|ess`, `weight/domain_mean/<domain>`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

Series = dict[str, tuple[list[int], list[float]]]

MIXTURE = "mixture/"
SELECT = "select/domain_fraction/"
WEIGHT_VALUES = "weight/values"
WEIGHT_DOMAIN = "weight/domain_mean/"
WEIGHT_STATS = ("weight/min", "weight/max", "weight/entropy", "weight/ess")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def series(records: list[dict[str, Any]], prefix: str) -> Series:
    """`{name: (steps, values)}` for every scalar key under `prefix` (name = key without the prefix);
    nested prefixes are excluded (`eval/loss/` does not pick up `eval/loss/x/y`)."""
    out: Series = {}
    for r in records:
        for key, value in r.items():
            if not key.startswith(prefix) or "/" in key[len(prefix):]:
                continue
            number = _number(value)
            if number is not None:
                steps, values = out.setdefault(key[len(prefix):], ([], []))
                steps.append(int(r["step"]))
                values.append(number)
    return out


def scalar(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for r in records:
        number = _number(r.get(key))
        if number is not None:
            steps.append(int(r["step"]))
            values.append(number)
    return steps, values


def weight_values(records: list[dict[str, Any]]) -> list[tuple[int, list[float]]]:
    """The logged per-sample weights `(step, values)` in step order."""
    out = []
    for r in records:
        values = r.get(WEIGHT_VALUES)
        if isinstance(values, list) and values:
            out.append((int(r["step"]), [float(v) for v in values if _number(v) is not None]))
    return out


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def _lines(ax, data: Series, marker_below: int = 20) -> None:
    for label, (xs, ys) in data.items():
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < marker_below else None, markersize=3)
    ax.set_xlabel("step")
    if len(data) > 1:
        ax.legend(fontsize="small")


def stacked_area(ax, data: Series) -> None:
    """Proportions stacked to 1 over steps (domains share the steps at which the mixer logged them)."""
    names = list(data)
    steps = data[names[0]][0]
    rows = [data[n][1] for n in names if len(data[n][1]) == len(steps)]
    ax.stackplot(steps, rows, labels=[n for n in names if len(data[n][1]) == len(steps)], alpha=0.85)
    ax.set_xlabel("step")
    ax.set_ylim(0, max(1.0, max((sum(col) for col in zip(*rows)), default=1.0)))
    ax.margins(x=0)


def plot_loss(records, out: Path) -> Path | None:
    train, evals = scalar(records, "loss"), scalar(records, "eval/loss")
    if not train[0] and not evals[0]:
        return None
    fig, ax = pyplot().subplots(figsize=(6, 4))
    _lines(ax, {k: v for k, v in {"train loss": train, "eval loss (all domains)": evals}.items() if v[0]})
    ax.set_title("loss")
    return _save(fig, out / "train_loss.png")


def plot_eval_per_domain(records, out: Path) -> Path | None:
    data = series(records, "eval/loss/")
    if not data:
        return None
    fig, ax = pyplot().subplots(figsize=(6, 4))
    _lines(ax, data)
    ax.set_title("eval loss per domain")
    return _save(fig, out / "eval_loss_per_domain.png")


def plot_train_per_domain(records, out: Path) -> Path | None:
    """Training loss per domain (`train/loss/<domain>`, logged by strategies that track it, e.g. mixers)."""
    data = series(records, "train/loss/")
    if not data:
        return None
    fig, ax = pyplot().subplots(figsize=(6, 4))
    _lines(ax, data, marker_below=0)
    ax.set_title("train loss per domain")
    return _save(fig, out / "train_loss_per_domain.png")


def plot_mixture(records, out: Path) -> Path | None:
    data = series(records, MIXTURE)
    if not data:
        return None
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4))
    _lines(left, data)
    left.set_title("mixture proportions")
    left.set_ylabel("proportion")
    stacked_area(right, data)
    right.set_title("mixture proportions (stacked)")
    right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out / "mixture_proportions.png")


def plot_selection(records, out: Path) -> Path | None:
    """Stacked bars: for each selection update, the share of each domain in the selected samples."""
    data = series(records, SELECT)
    if not data:
        return None
    fig, ax = pyplot().subplots(figsize=(7, 4))
    steps = sorted({s for xs, _ in data.values() for s in xs})
    positions = range(len(steps))
    bottom = [0.0] * len(steps)
    for name, (xs, ys) in data.items():
        by_step = dict(zip(xs, ys))
        heights = [by_step.get(s, 0.0) for s in steps]
        ax.bar(positions, heights, bottom=bottom, label=name, width=0.85)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(list(positions), [str(s) for s in steps], rotation=90 if len(steps) > 12 else 0, fontsize="small")
    ax.set_xlabel("step of the selection update")
    ax.set_ylabel("fraction of selected samples")
    ax.set_title("selected-sample domain fractions per update")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out / "selection_domain_fractions.png")


def plot_weight_histograms(records, out: Path, max_panels: int = 6) -> Path | None:
    """Histograms of the per-sample weights at up to `max_panels` logging steps (first, last, evenly between)."""
    logged = weight_values(records)
    if not logged:
        return None
    if len(logged) > max_panels:
        picks = sorted({round(i * (len(logged) - 1) / (max_panels - 1)) for i in range(max_panels)})
        logged = [logged[i] for i in picks]
    lo = min(min(v) for _, v in logged if v)
    hi = max(max(v) for _, v in logged if v)
    bins = 30 if hi > lo else 1
    cols = min(3, len(logged))
    rows = math.ceil(len(logged) / cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False, sharex=True)
    for ax, (step, values) in zip(axes.flat, logged):
        ax.hist(values, bins=bins, range=(lo, hi) if hi > lo else None, color="tab:blue")
        ax.set_title(f"step {step} (n={len(values)})", fontsize="small")
        ax.set_xlabel("per-sample weight")
    for ax in list(axes.flat)[len(logged):]:
        ax.axis("off")
    fig.suptitle("per-sample weight histograms")
    return _save(fig, out / "weight_histograms.png")


def plot_weight_stats(records, out: Path) -> Path | None:
    stats = {key.split("/")[-1]: scalar(records, key) for key in WEIGHT_STATS}
    stats = {k: v for k, v in stats.items() if v[0]}
    domain_means = series(records, WEIGHT_DOMAIN)
    panels = [("min / max weight", {k: stats[k] for k in ("min", "max") if k in stats})]
    panels += [(f"weight {k}", {k: stats[k]}) for k in ("entropy", "ess") if k in stats]
    panels += [("mean weight per domain", domain_means)]
    panels = [(title, data) for title, data in panels if data]
    if not panels:
        return None
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, data) in zip(axes.flat, panels):
        _lines(ax, data)
        ax.set_title(title, fontsize="medium")
    return _save(fig, out / "weight_stats.png")


PLOTTERS = (plot_loss, plot_eval_per_domain, plot_train_per_domain, plot_mixture, plot_selection, plot_weight_histograms, plot_weight_stats)


def plot_run(run_dir: str | Path) -> list[Path]:
    """Writes run_dir/plots/*.png from run_dir/metrics.jsonl; returns the files written."""
    from dataflex.tracking.sweep import read_jsonl

    run_dir = Path(run_dir)
    records = read_jsonl(run_dir / "metrics.jsonl")
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    return [path for plot in PLOTTERS if (path := plot(records, out_dir)) is not None]


class PlotTracker:
    """Draws the plots once, when the run finishes."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def finish(self) -> None:
        if (self.run_dir / "metrics.jsonl").is_file():
            plot_run(self.run_dir)


if __name__ == "__main__":
    from dataflex.report import main

    sys.exit(main(["plots", *sys.argv[1:]]))
