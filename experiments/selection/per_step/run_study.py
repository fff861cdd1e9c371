"""Per-step selection study (issue 19): max_loss, rho_loss, grad_norm, greats against uniform at equal
steps and at equal compute, 3 seeds, on `experiment=per_step_study` (100 steps, b = 8 of B = 16, constant
learning rate).

Per seed: the RHO-LOSS reference (`experiment=rho_loss_reference`: the tiny model trained on the holdout
split), each method for 100 steps, and ONE uniform run of 300 steps evaluated every 25 steps. With a
constant learning rate its first s steps are exactly an s-step uniform run, so "equal steps" is its eval at
step 100 and "equal compute" its eval at the step where it has spent what the method spent (linear
interpolation between the two evals around it; at most 12 steps away). Compute is counted in row
passes: a forward of one row = 1, a backward = 2 (the usual 1:2), the Gram / greedy arithmetic NOT
counted (see the README):

    uniform   3b                     (the update)
    max_loss  3b + B                 (+ the no-grad forward of the candidates)
    rho_loss  3b + 2B                (+ the reference's forward of each new candidate; all are new here)
    grad_norm 3(B)      + b          (forward + backward of the candidates; the update's weight gradients
    greats    3(B + v)  + b           of the b kept are assembled from that pass: ~b, not 3b; v = val rows)

Runs go to <out>/<seed>/<name> (one process each, `nice -n 10`, OMP_NUM_THREADS=1); a finished run
(summary.json present) is not run again, so an interrupted study resumes; the table: `--report`.

    python experiments/selection/per_step/run_study.py --out /tmp/per_step_study
    python experiments/selection/per_step/run_study.py --out /tmp/per_step_study --report \
        --json experiments/selection/per_step/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SEEDS = (42, 43, 44)
METHODS = ("uniform", "max_loss", "rho_loss", "grad_norm", "greats")
STEPS, B_KEPT, B_CAND, VAL_ROWS = 100, 8, 16, 4
UNIFORM_STEPS, EVAL_EVERY = 300, 25
COST = {
    "uniform": 3 * B_KEPT,
    "max_loss": 3 * B_KEPT + B_CAND,
    "rho_loss": 3 * B_KEPT + 2 * B_CAND,
    "grad_norm": 3 * B_CAND + B_KEPT,
    "greats": 3 * (B_CAND + VAL_ROWS) + B_KEPT,
}
"""Row passes per step (module docstring)."""
DOMAINS = ("arith", "greet", "noise", "reverse", "target")


def matched_steps(method: str) -> float:
    """Uniform steps costing what `STEPS` steps of `method` cost."""
    return STEPS * COST[method] / COST["uniform"]


def _run(out: Path, overrides: list[str]) -> None:
    if (out / "summary.json").is_file():
        return
    if out.exists():  # an interrupted run: start it again in a fresh folder (never overwrite)
        out.rename(out.with_name(out.name + f".interrupted-{os.getpid()}"))
    cmd = ["nice", "-n", "10", sys.executable, "-m", "dataflex.cli", *overrides, f"trainer.output_dir={out}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    print(" ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_seed(root: Path, seed: int) -> None:
    base = Path(root) / str(seed)
    ref = base / "reference"
    _run(ref, ["experiment=rho_loss_reference", "data.val_size=null", f"trainer.seed={seed}"])
    study = ["experiment=per_step_study", f"trainer.seed={seed}"]
    extra = {
        "rho_loss": [f"component.reference_model={ref / 'final_model'}"],
        "greats": ["component.target_domain=target", f"component.val_size={VAL_ROWS}"],
    }
    long = [f"trainer.max_steps={UNIFORM_STEPS}", f"trainer.eval_steps={EVAL_EVERY}"]
    _run(base / "uniform", [*study, "component=uniform", *long])
    for method in METHODS[1:]:
        _run(base / method, [*study, f"component={method}", *extra.get(method, [])])


def _evals(run: Path) -> dict[int, dict[str, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {int(r["step"]): r for r in rows if "eval/loss" in r}


def _at(evals: dict[int, dict[str, float]], step: float, key: str) -> float:
    """`key` at `step`, linear between the evals around it."""
    lo = max(s for s in evals if s <= step)
    hi = min(s for s in evals if s >= step)
    if lo == hi:
        return evals[lo][key]
    t = (step - lo) / (hi - lo)
    return (1 - t) * evals[lo][key] + t * evals[hi][key]


def _target_share(run: Path, steps: int) -> float:
    import pandas as pd

    ledger = pd.concat(pd.read_parquet(p) for p in sorted((run / "ledger").glob("*.parquet")))
    ledger = ledger[ledger["step"] <= steps]
    return float((ledger["domain"] == "target").mean())


def report(root: Path, json_out: str | None) -> None:
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for seed in SEEDS:
        base = Path(root) / str(seed)
        if not (base / "uniform" / "summary.json").is_file():
            continue
        uniform = _evals(base / "uniform")
        for method in METHODS:
            run = base / method
            if not (run / "summary.json").is_file():
                continue
            ev = _evals(run)[STEPS]
            steps, matched = STEPS, matched_steps(method)
            row = {
                "target": ev["eval/loss/target"],
                "all": ev["eval/loss"],
                "share": _target_share(run, STEPS),
            }
            for key, name in (("eval/loss/target", "target"), ("eval/loss", "all")):
                row[f"d_{name}_steps"] = ev[key] - _at(uniform, steps, key)
                row[f"d_{name}_compute"] = (
                    ev[key] - _at(uniform, matched, key) if method != "uniform" else None
                )
            row.update({f"eval/{d}": ev[f"eval/loss/{d}"] for d in DOMAINS})
            rows.setdefault(method, {})[seed] = row

    def stat(values: list[float]) -> str:
        if not values:
            return "-"
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):+.3f} ± {spread:.3f}" if values else "-"

    def plain(values: list[float]) -> str:
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {spread:.3f}"

    print(
        "| method | compute/step (row passes) | uniform steps at equal compute | `target` share "
        "| eval target | eval all | Δ target vs uniform, equal steps | Δ all, equal steps "
        "| Δ target, equal compute | Δ all, equal compute | seeds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for method, by_seed in rows.items():
        vals = list(by_seed.values())

        def col(key: str, vals: list[dict] = vals) -> list[float]:
            return [v[key] for v in vals if v[key] is not None]

        print(
            f"| {method} | {COST[method]} | {matched_steps(method):.0f} "
            f"| {100 * statistics.mean(col('share')):.1f}% "
            f"| {plain(col('target'))} | {plain(col('all'))} | {stat(col('d_target_steps'))} "
            f"| {stat(col('d_all_steps'))} | {stat(col('d_target_compute'))} | {stat(col('d_all_compute'))} "
            f"| {len(vals)} |"
        )
    print("\nPer seed (method − uniform; negative = better), target / all:")
    for method, by_seed in rows.items():
        if method == "uniform":
            continue
        steps = " ".join(
            f"{s}: {v['d_target_steps']:+.3f}/{v['d_all_steps']:+.3f}" for s, v in by_seed.items()
        )
        comp = " ".join(
            f"{s}: {v['d_target_compute']:+.3f}/{v['d_all_compute']:+.3f}"
            for s, v in by_seed.items()
            if v["d_target_compute"] is not None
        )
        print(f"- {method}: equal steps {steps}; equal compute {comp}")
    if json_out:
        summary = {"cost": COST, "steps": STEPS, "uniform_steps": UNIFORM_STEPS, "runs": rows}
        Path(json_out).write_text(json.dumps(summary, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder of all runs (<out>/<seed>/<name>)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--report", action="store_true", help="only print the table of finished runs")
    parser.add_argument("--json", default=None, help="with --report: write every number here")
    args = parser.parse_args()
    if not args.report:
        for seed in (int(s) for s in args.seeds.split(",")):
            run_seed(Path(args.out), seed)
    report(Path(args.out), args.json)


if __name__ == "__main__":
    main()
