"""PNG plots of one run's metrics.jsonl, drawn at the end of the run and on demand:

    python -m dataflex.tracking.plots RUN_DIR      (or: dataflex-report plots RUN_DIR)

Each plot is drawn only when its metrics exist (a static run has no mixture plot). Keys read: `loss`,
`eval/loss`, `eval/loss/<domain>`, `train/loss/<domain>`, `mixture/<domain>`,
`select/domain_fraction/<domain>`, `select/pool_fraction/<domain>`, `weight/values` (list of floats),
`weight/active`, `weight/min|max|entropy|ess`, `weight/domain_mean/<domain>`.

Meant for a paper: every y axis says what it measures and in which unit, the title names the run's trainer and
component (from `.hydra/`), proportions are drawn as the step functions they are (a value logged at step s is
in force from step s+1 to the next update, and the last one to the end of the run), the selection plot marks
each domain's base rate (its share of the candidate pool: what random selection would pick), weight histograms
show weighted steps only (after the trainer's warmup), and bars start at zero.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

Series = dict[str, tuple[list[int], list[float]]]

MIXTURE = "mixture/"
SELECT = "select/domain_fraction/"
POOL = "select/pool_fraction/"
STEP_LABEL = "optimizer step"
LOSS_UNIT = "(nats/token)"
RELATIVE_WEIGHT = "relative weight N·w (1 = uniform)"
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
            if not key.startswith(prefix) or "/" in key[len(prefix) :]:
                continue
            number = _number(value)
            if number is not None:
                steps, values = out.setdefault(key[len(prefix) :], ([], []))
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


def last_step(records: list[dict[str, Any]]) -> int:
    return max((int(r["step"]) for r in records), default=0)


def weight_values(records: list[dict[str, Any]]) -> list[tuple[int, list[float]]]:
    """The logged per-sample weights `(step, values)` in step order, of weighted steps only (`weight/active`
    false: the plain-loss warmup, where every weight is 1)."""
    out = []
    for r in records:
        values = r.get(WEIGHT_VALUES)
        if r.get("weight/active") in (0, 0.0, False):
            continue
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
    fig.savefig(path, dpi=150)
    pyplot().close(fig)
    return path


def run_title(run_dir: Path | None) -> str:
    """`dynamic_mix / odm` from the run's `.hydra/hydra.yaml` (the chosen options); "" when unknown."""
    if run_dir is None or not (Path(run_dir) / ".hydra" / "hydra.yaml").is_file():
        return ""
    import yaml

    try:
        choices = yaml.safe_load((Path(run_dir) / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"][
            "choices"
        ]
    except (KeyError, TypeError, yaml.YAMLError):
        return ""
    parts = [choices.get("trainer"), choices.get("component")]
    return " / ".join(str(p) for p in parts if p and p != "none")


def _title(ax, what: str, run: str) -> None:
    ax.set_title(f"{what}\n{run}" if run else what, fontsize="medium")


def _lines(ax, data: Series, marker_below: int = 20, ylabel: str | None = None) -> None:
    for label, (xs, ys) in data.items():
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < marker_below else None, markersize=3)
    ax.set_xlabel(STEP_LABEL)
    if ylabel:
        ax.set_ylabel(ylabel)
    if len(data) > 1:
        ax.legend(fontsize="small")


def step_series(data: Series, end: int) -> Series:
    """Piecewise-constant proportions: each value holds from its step to the next one, the last to `end`."""
    out: Series = {}
    for name, (xs, ys) in data.items():
        if xs:
            out[name] = (list(xs) + [max(end, xs[-1])], list(ys) + [ys[-1]])
    return out


def proportion_steps(ax, data: Series, end: int) -> None:
    for name, (xs, ys) in step_series(data, end).items():
        ax.step(xs, ys, where="post", label=name)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("sampling proportion (fraction of each batch)")
    ax.set_ylim(bottom=0)
    ax.set_xlim(0, max(end, 1))


def stacked_area(ax, data: Series, end: int | None = None) -> None:
    """Proportions stacked to 1 as step functions through `end` (the run's last step; default the last
    logged update). Domains share the steps at which the mixer logged them."""
    names = list(data)
    steps = data[names[0]][0]
    keep = [n for n in names if len(data[n][1]) == len(steps)]
    end = max(end if end is not None else steps[-1], steps[-1])
    xs = list(steps) + [end]
    rows = [list(data[n][1]) + [data[n][1][-1]] for n in keep]
    ax.stackplot(xs, rows, labels=keep, alpha=0.85, step="post")
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("sampling proportion (stacked)")
    ax.set_ylim(0, max(1.0, max((sum(col) for col in zip(*rows)), default=1.0)))
    ax.set_xlim(steps[0], end)


def plot_loss(records, out: Path, run: str = "") -> Path | None:
    train, evals = scalar(records, "loss"), scalar(records, "eval/loss")
    if not train[0] and not evals[0]:
        return None
    fig, ax = pyplot().subplots(figsize=(6, 4))
    _lines(
        ax,
        {
            k: v
            for k, v in {
                "train loss (mean over the logging interval)": train,
                "eval loss (all domains)": evals,
            }.items()
            if v[0]
        },
        ylabel=f"cross-entropy loss {LOSS_UNIT}",
    )
    _title(ax, "training and eval loss", run)
    return _save(fig, out / "train_loss.png")


def plot_eval_per_domain(records, out: Path, run: str = "") -> Path | None:
    data = series(records, "eval/loss/")
    if not data:
        return None
    fig, ax = pyplot().subplots(figsize=(6, 4))
    _lines(ax, data, ylabel=f"eval loss {LOSS_UNIT}")
    _title(ax, "eval loss per domain", run)
    return _save(fig, out / "eval_loss_per_domain.png")


def plot_train_per_domain(records, out: Path, run: str = "") -> Path | None:
    """Training loss per domain (`train/loss/<domain>`, logged by strategies that track it, e.g. mixers)."""
    data = series(records, "train/loss/")
    if not data:
        return None
    fig, ax = pyplot().subplots(figsize=(6, 4))
    _lines(ax, data, marker_below=0, ylabel=f"training loss {LOSS_UNIT}")
    _title(ax, "training loss per domain", run)
    return _save(fig, out / "train_loss_per_domain.png")


def plot_mixture(records, out: Path, run: str = "") -> Path | None:
    data = series(records, MIXTURE)
    if not data:
        return None
    end = last_step(records)
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4))
    proportion_steps(left, data, end)
    _title(left, "mixture proportions in force", run)
    left.legend(fontsize="small")
    stacked_area(right, data, end)
    _title(right, "mixture proportions (stacked)", run)
    right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out / "mixture_proportions.png")


def plot_selection(records, out: Path, run: str = "") -> Path | None:
    """Per domain, its share of the selected samples at each update (markers), and its base rate (dashed:
    its share of the candidate pool, what random selection picks on average)."""
    data = series(records, SELECT)
    if not data:
        return None
    pool = series(records, POOL)
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for k, (name, (xs, ys)) in enumerate(data.items()):
        color = f"C{k % 10}"
        ax.plot(xs, ys, marker="o", markersize=4, color=color, label=name)
        if name in pool:
            ax.axhline(pool[name][1][-1], color=color, linestyle="--", linewidth=1)
    if pool:
        ax.plot([], [], color="gray", linestyle="--", label="base rate (share of the pool)")
    ax.set_xlabel("step of the selection update")
    ax.set_ylabel("share of the selected samples")
    ax.set_ylim(0, 1)
    _title(ax, "selected samples per domain vs. base rate", run)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out / "selection_domain_fractions.png")


def plot_weight_histograms(records, out: Path, run: str = "", max_panels: int = 6) -> Path | None:
    """Histograms of the per-sample weights at up to `max_panels` weighted logging steps (first, last, evenly
    between); warmup steps (all weights 1) are left out."""
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
        ax.axvline(1.0, color="gray", linestyle="--", linewidth=1)  # uniform weighting
        ax.set_title(f"step {step} (n={len(values)})", fontsize="small")
        ax.set_xlabel(RELATIVE_WEIGHT)
        ax.set_ylabel("samples")
    for ax in list(axes.flat)[len(logged) :]:
        ax.axis("off")
    fig.suptitle("per-sample weight histograms after warmup (dashed: uniform)" + (f" — {run}" if run else ""))
    return _save(fig, out / "weight_histograms.png")


WEIGHT_PANEL_LABELS = {
    "min / max weight": RELATIVE_WEIGHT,
    "weight entropy": "entropy of w / Σw (nats)",
    "effective sample size (Kish)": "effective sample size (samples)",
    "mean weight per domain": RELATIVE_WEIGHT,
}


def plot_weight_stats(records, out: Path, run: str = "") -> Path | None:
    stats = {key.split("/")[-1]: scalar(records, key) for key in WEIGHT_STATS}
    stats = {k: v for k, v in stats.items() if v[0]}
    domain_means = series(records, WEIGHT_DOMAIN)
    panels = [("min / max weight", {k: stats[k] for k in ("min", "max") if k in stats})]
    titles = {"entropy": "weight entropy", "ess": "effective sample size (Kish)"}
    panels += [(titles[k], {k: stats[k]}) for k in ("entropy", "ess") if k in stats]
    panels += [("mean weight per domain", domain_means)]
    panels = [(title, data) for title, data in panels if data]
    if not panels:
        return None
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, data) in zip(axes.flat, panels):
        _lines(ax, data, ylabel=WEIGHT_PANEL_LABELS[title])
        ax.set_title(title, fontsize="medium")
    if run:
        fig.suptitle(f"per-sample weights — {run}")
    return _save(fig, out / "weight_stats.png")


PLOTTERS = (
    plot_loss,
    plot_eval_per_domain,
    plot_train_per_domain,
    plot_mixture,
    plot_selection,
    plot_weight_histograms,
    plot_weight_stats,
)


def plot_run(run_dir: str | Path) -> list[Path]:
    """Writes run_dir/plots/*.png from run_dir/metrics.jsonl; returns the files written."""
    from dataflex.tracking.sweep import read_jsonl

    run_dir = Path(run_dir)
    records = read_jsonl(run_dir / "metrics.jsonl")
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    run = run_title(run_dir)
    return [path for plot in PLOTTERS if (path := plot(records, out_dir, run=run)) is not None]


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
