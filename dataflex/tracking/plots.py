"""PNG plots of a run's metrics.jsonl, written at the end of the run (and by `plot_run`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any


def _series(records: list[dict[str, Any]], prefix: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for r in records:
        for key, value in r.items():
            if key.startswith(prefix) and isinstance(value, (int, float)):
                out[key[len(prefix):]][0].append(r["step"])
                out[key[len(prefix):]][1].append(float(value))
    return dict(out)


def plot_run(run_dir: str | Path) -> list[Path]:
    """Writes plots/*.png from run_dir/metrics.jsonl; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dataflex.tracking.jsonl import read_metrics

    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    panels = [("train_loss.png", "train loss", {"loss": _series(records, "").get("loss", ([], []))}),
              ("eval_loss_per_domain.png", "eval loss per domain", _series(records, "eval/loss/"))]
    for name, title, series in panels:
        series = {k: v for k, v in series.items() if v[0]}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, (xs, ys) in sorted(series.items()):
            ax.plot(xs, ys, label=label, marker="o" if len(xs) < 20 else None)
        ax.set_xlabel("step")
        ax.set_title(title)
        if len(series) > 1:
            ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    return written


class PlotTracker:
    """Draws the plots once, when the run finishes."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def finish(self) -> None:
        if (self.run_dir / "metrics.jsonl").is_file():
            plot_run(self.run_dir)
