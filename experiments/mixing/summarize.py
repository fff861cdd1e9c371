r"""Table and plot of a `dataflex-run -m experiment=mixing_study` sweep.

    python experiments/mixing/summarize.py multirun_outputs/<date>/<time> \
        [--out experiments/mixing] [--extra RUN_DIR ...]
    python experiments/mixing/summarize.py SWEEP_SEED42 SWEEP_SEED43 ... --seeds-only   # the seed table only

Per method: final eval loss per domain, their unweighted average and the worst domain, the mixture in
force at the end (its weight on `noise`) and the mixture averaged over the training steps. Writes
results.json and mixing_study.png into --out and prints the markdown table. Given several sweeps (one per
seed), it also prints mean ± std over the seeds and writes results_seeds.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

METHODS = ("uniform", "stratified", "random", "odm", "odm_progress", "doremi_proxy", "doremi")


def mixture_per_step(history: dict, total: int) -> np.ndarray:
    """(total, K): the proportions in force at each step 1..total."""
    out = np.zeros((total, len(history["domains"])))
    for u in history["updates"]:
        out[u["step"] :] = u["proportions"]
    return out


def load(method_dir: Path) -> dict:
    summary = json.loads((method_dir / "summary.json").read_text())
    history = json.loads((method_dir / "mixture_history.json").read_text())
    names, total = history["domains"], summary["steps"]
    final = summary["final_eval"]
    losses = {d: final[f"eval/loss/{d}"] for d in names}
    per_step = mixture_per_step(history, total)
    row = {
        "domains": names,
        "eval_loss": losses,
        "average": float(np.mean(list(losses.values()))),
        "worst": max(losses, key=losses.get),
        "final_mixture": dict(zip(names, per_step[-1].tolist())),
        "mean_mixture": dict(zip(names, per_step.mean(0).tolist())),
        "steps": total,
        "wall_time_s": summary["wall_time_s"],
        "per_step_mixture": per_step.tolist(),
    }
    weights = method_dir / "doremi_weights.json"
    if weights.is_file():
        w = json.loads(weights.read_text())
        row["doremi_weights"] = dict(zip(w["domains"], w["proportions"]))
        records = [json.loads(x) for x in (method_dir / "metrics.jsonl").read_text().splitlines()]
        row["alpha_average_per_step"] = [
            [r[f"doremi/average_alpha/{d}"] for d in names]
            for r in records
            if f"doremi/average_alpha/{names[0]}" in r
        ]
    return row


def table(rows: dict[str, dict]) -> str:
    names = next(iter(rows.values()))["domains"]
    head = (
        "| method | "
        + " | ".join(f"eval {d}" for d in names)
        + " | average | worst | noise: final | noise: mean |"
    )
    lines = [head, "|---" * (len(names) + 5) + "|"]
    for method, r in rows.items():
        cells = [f"{r['eval_loss'][d]:.3f}" for d in names]
        lines.append(
            f"| {method} | " + " | ".join(cells) + f" | {r['average']:.3f} | {r['worst']} "
            f"({r['eval_loss'][r['worst']]:.3f}) | {r['final_mixture']['noise']:.3f} | "
            f"{r['mean_mixture']['noise']:.3f} |"
        )
    return "\n".join(lines)


def seed_table(per_seed: list[dict[str, dict]]) -> tuple[str, dict]:
    """Mean ± std over seeds of each method's eval losses, average, worst-domain loss and noise weight."""
    methods = [m for m in per_seed[0] if all(m in rows for rows in per_seed)]
    names = per_seed[0][methods[0]]["domains"]
    head = (
        "| method | "
        + " | ".join(f"eval {d}" for d in names)
        + " | average | worst-domain loss | noise: final | noise: mean | seeds |"
    )
    lines, out = [head, "|---" * (len(names) + 6) + "|"], {}
    for m in methods:
        runs = [rows[m] for rows in per_seed]
        stats = {f"eval_{d}": [r["eval_loss"][d] for r in runs] for d in names}
        stats["average"] = [r["average"] for r in runs]
        stats["worst_loss"] = [r["eval_loss"][r["worst"]] for r in runs]
        stats["noise_final"] = [r["final_mixture"]["noise"] for r in runs]
        stats["noise_mean"] = [r["mean_mixture"]["noise"] for r in runs]
        out[m] = {
            k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v} for k, v in stats.items()
        }
        cell = {k: f"{np.mean(v):.3f} ± {np.std(v):.3f}" for k, v in stats.items()}
        lines.append(
            f"| {m} | " + " | ".join(cell[f"eval_{d}"] for d in names) + f" | {cell['average']} | "
            f"{cell['worst_loss']} | {cell['noise_final']} | {cell['noise_mean']} | {len(runs)} |"
        )
    return "\n".join(lines), out


def plot(rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = next(iter(rows.values()))["domains"]
    panels = [
        ("random", "random: mixture in force", "per_step_mixture"),
        ("odm", "ODM: mixture in force", "per_step_mixture"),
        ("odm_progress", "ODM, learning-progress reward", "per_step_mixture"),
        ("doremi_proxy", "DoReMi step 2: running average of alpha", "alpha_average_per_step"),
    ]
    panels = [p for p in panels if p[0] in rows and rows[p[0]].get(p[2])]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5 * (len(panels) + 1), 4))
    for ax, (method, title, key) in zip(axes, panels):
        series = np.asarray(rows[method][key])
        for d, name in enumerate(names):
            ax.plot(np.arange(1, len(series) + 1), series[:, d], label=name)
        ax.axhline(1 / len(names), color="gray", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(0, None)
    axes[0].legend(fontsize="small")
    ax = axes[-1]
    width = 0.8 / len(rows)
    for i, (method, r) in enumerate(rows.items()):
        ax.bar(np.arange(len(names)) + i * width, [r["eval_loss"][d] for d in names], width, label=method)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_title("final eval loss per domain", fontsize=10)
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "sweep_dirs", type=Path, nargs="+", help="one sweep, or one per seed (the first is plotted)"
    )
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    p.add_argument("--extra", type=Path, nargs="*", default=[], help="more run dirs (rows named by folder)")
    p.add_argument(
        "--seeds-only", action="store_true", help="only the mean ± std table over the given sweeps"
    )
    args = p.parse_args()
    per_seed = [
        {m: load(d / m) for m in METHODS if (d / m / "summary.json").is_file()} for d in args.sweep_dirs
    ]
    if len(per_seed) > 1:
        text, stats = seed_table(per_seed)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results_seeds.json").write_text(json.dumps(stats, indent=2))
        print(text + "\n")
    if args.seeds_only:
        return
    rows = per_seed[0]
    rows.update({d.name: load(d) for d in args.extra})
    args.out.mkdir(parents=True, exist_ok=True)
    slim = {
        m: {k: v for k, v in r.items() if k not in ("per_step_mixture", "alpha_average_per_step")}
        for m, r in rows.items()
    }
    (args.out / "results.json").write_text(json.dumps(slim, indent=2))
    plot(rows, args.out / "mixing_study.png")
    print(table(rows))
    for m, r in rows.items():
        if "doremi_weights" in r:
            print(
                f"\n{m}: DoReMi weights (running average of alpha) "
                + ", ".join(f"{d}={w:.3f}" for d, w in r["doremi_weights"].items())
            )


if __name__ == "__main__":
    main()
