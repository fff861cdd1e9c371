"""Tables of selection-study sweeps: per method, the fraction of selected samples from the target domain
(all selections pooled, and first -> last selection), the eval loss on the target domain over training and
the final eval loss per domain, and the time spent selecting.

    python experiments/selection/summarize.py SWEEP_DIR                      # one sweep (one seed)
    python experiments/selection/summarize.py SWEEP_SEED42 SWEEP_SEED43 ...  # + mean ± std over seeds
        [--json experiments/selection/results_seeds.json]                  # (population std)

Jobs are matched across sweeps by their overrides (minus the seed), so every sweep must run the same jobs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def summarize(job: Path, target: str) -> dict:
    updates = sorted((job / "selection").glob("update_*.json"))
    recs = [json.loads(p.read_text()) for p in updates]
    fracs = [r["domain_counts"][target] / max(sum(r["domain_counts"].values()), 1) for r in recs]
    pooled = sum(r["domain_counts"][target] for r in recs) / max(
        sum(sum(r["domain_counts"].values()) for r in recs), 1
    )
    metrics = [json.loads(x) for x in (job / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if "eval/loss" in m]
    final = evals[-1]
    domains = sorted(k.rsplit("/", 1)[-1] for k in final if k.startswith("eval/loss/"))
    summary = json.loads((job / "summary.json").read_text())
    unique = sum(len(set(r["selected"])) for r in recs) / max(sum(len(r["selected"]) for r in recs), 1)
    return {
        "method": recs[0]["selector"] if recs else job.name,
        "target_fraction": pooled,
        "first_last": (fracs[0], fracs[-1]) if fracs else (float("nan"),) * 2,
        "unique": unique,
        "target_losses": [m[f"eval/loss/{target}"] for m in evals],
        "eval_steps": [m["step"] for m in evals],
        "domain_loss": {d: final[f"eval/loss/{d}"] for d in domains},
        "loss": final["eval/loss"],
        "select_s": sum(m.get("select/time_s", 0.0) for m in metrics),
        "wall_s": summary["wall_time_s"],
        "steps": summary["steps"],
    }


def job_name(job: Path) -> str:
    overrides = job.name.split("_", 1)[1].split(",") if "_" in job.name else [job.name]
    return ",".join(o for o in overrides if not o.startswith(("experiment=", "trainer.seed=")))


def jobs_of(sweep: Path) -> list[Path]:
    return sorted(
        (p for p in sweep.iterdir() if (p / "summary.json").is_file()),
        key=lambda p: int(p.name.split("_", 1)[0]),
    )


def one_sweep_table(sweep: Path, target: str) -> str:
    jobs = jobs_of(sweep)
    rows = [summarize(j, target) for j in jobs]
    steps = " / ".join(f"step {s}" for s in rows[0]["eval_steps"]) if rows else ""
    out = [
        f"| job | selector | `{target}` share of selected samples | first -> last selection | distinct | "
        f"eval loss `{target}` ({steps}) | eval loss, all domains (end) | selection time s | run wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for job, r in zip(jobs, rows):
        losses = " / ".join(f"{x:.3f}" for x in r["target_losses"])
        out.append(
            f"| {job_name(job)} | {r['method']} | {r['target_fraction']:.1%} | "
            f"{r['first_last'][0]:.0%} -> {r['first_last'][1]:.0%} | {r['unique']:.0%} | {losses} | "
            f"{r['loss']:.3f} | {r['select_s']:.0f} | {r['wall_s']:.0f} |"
        )
    return "\n".join(out)


def seeds_table(sweeps: list[Path], target: str) -> tuple[str, dict]:
    per_job: dict[str, list[dict]] = {}
    for sweep in sweeps:
        for job in jobs_of(sweep):
            per_job.setdefault(job_name(job), []).append(summarize(job, target))
    domains = next(iter(per_job.values()))[0]["domain_loss"].keys()

    def ms(values, digits: int = 3) -> str:
        v = np.asarray(values, dtype=float)
        return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"

    head = (
        f"| job | `{target}` share | "
        + " | ".join(f"eval {d}" for d in domains)
        + " | eval all | selection s | seeds |"
    )
    out = [head, "|---" * (len(domains) + 5) + "|"]
    raw = {}
    for name, rows in per_job.items():
        cells = [ms([r["domain_loss"][d] for r in rows]) for d in domains]
        out.append(
            f"| {name} | {ms([100 * r['target_fraction'] for r in rows], 1)}% | "
            + " | ".join(cells)
            + f" | {ms([r['loss'] for r in rows])} | {np.mean([r['select_s'] for r in rows]):.0f} | "
            + f"{len(rows)} |"
        )
        raw[name] = rows
    return "\n".join(out), raw


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep_dirs", nargs="+")
    ap.add_argument("--target", default="target")
    ap.add_argument("--json", default=None, help="write the per-seed numbers here")
    args = ap.parse_args()
    sweeps = [Path(s) for s in args.sweep_dirs]
    for sweep in sweeps:
        print(f"\n{sweep}\n")
        print(one_sweep_table(sweep, args.target))
    if len(sweeps) > 1:
        text, raw = seeds_table(sweeps, args.target)
        print(f"\nmean ± std over {len(sweeps)} sweeps\n")
        print(text)
        if args.json:
            Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
