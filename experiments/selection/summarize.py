"""Table of a selection-study sweep: per method, the fraction of selected samples from the target domain
(all selections pooled, and first -> last selection), the final eval loss on the target domain and
overall, and the time spent selecting.

    python experiments/selection/summarize.py multirun_outputs/<date>/<time>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def summarize(job: Path, target: str) -> dict:
    updates = sorted((job / "selection").glob("update_*.json"))
    recs = [json.loads(p.read_text()) for p in updates]
    fracs = [r["domain_counts"][target] / max(sum(r["domain_counts"].values()), 1) for r in recs]
    pooled = sum(r["domain_counts"][target] for r in recs) / max(sum(sum(r["domain_counts"].values()) for r in recs), 1)
    metrics = [json.loads(x) for x in (job / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if "eval/loss" in m]
    final = evals[-1]
    summary = json.loads((job / "summary.json").read_text())
    unique = sum(len(set(r["selected"])) for r in recs) / max(sum(len(r["selected"]) for r in recs), 1)
    return {"method": recs[0]["selector"] if recs else job.name, "target_fraction": pooled,
            "first_last": (fracs[0], fracs[-1]) if fracs else (float("nan"),) * 2, "unique": unique,
            "target_losses": [m[f"eval/loss/{target}"] for m in evals], "eval_steps": [m["step"] for m in evals],
            "loss": final["eval/loss"], "select_s": sum(m.get("select/time_s", 0.0) for m in metrics),
            "wall_s": summary["wall_time_s"], "steps": summary["steps"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep_dir")
    ap.add_argument("--target", default="target")
    args = ap.parse_args()
    jobs = sorted((p for p in Path(args.sweep_dir).iterdir() if (p / "summary.json").is_file()),
                  key=lambda p: int(p.name.split("_", 1)[0]))
    rows = [summarize(j, args.target) for j in jobs]
    steps = " / ".join(f"step {s}" for s in rows[0]["eval_steps"]) if rows else ""
    print(f"| job | selector | `{args.target}` share of selected samples | first -> last selection | distinct | "
          f"eval loss `{args.target}` ({steps}) | eval loss, all domains (end) | selection time s | run wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for job, r in zip(jobs, rows):
        losses = " / ".join(f"{x:.3f}" for x in r["target_losses"])
        name = ",".join(o for o in job.name.split("_", 1)[1].split(",") if not o.startswith("experiment="))
        print(f"| {name} | {r['method']} | {r['target_fraction']:.1%} | "
              f"{r['first_last'][0]:.0%} -> {r['first_last'][1]:.0%} | {r['unique']:.0%} | {losses} | {r['loss']:.3f} | "
              f"{r['select_s']:.0f} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
