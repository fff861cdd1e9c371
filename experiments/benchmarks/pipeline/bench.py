"""Overhead of a 3-stage pipeline whose stages share a signal vs the sum of its stages run separately.

Each configuration is one `dataflex-run` (the documented CLI), run under `nice -n 10` with OMP_NUM_THREADS=1;
the runs alternate (static, pipeline, pipeline without sharing, filter alone, reorder alone, weight alone,
static, ...) so machine load hits all alike; the table reports medians over the repeats of the loop's own
wall time (`summary.json` `wall_time_s`: training, boundaries and the final eval; not process start or data
and model loading), of the process CPU time (the whole run: the same start-up cost in every configuration,
so it cancels in the overheads; robust when the machine is shared) and the signal passes/rows logged.

    python experiments/benchmarks/pipeline/bench.py --steps 40 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FILTER = "{kind: select, use: loss, mode: filter, keep_ratio: 0.5}"
REORDER = "{kind: reorder, component: {pattern: saw, layers: 2}}"
WEIGHT = "{kind: weight, use: loss, every: 1}"
CONFIGS = {
    "static": ["trainer=static"],
    "pipeline (shared signals)": ["trainer=pipeline", f"pipeline.stages=[{FILTER},{REORDER},{WEIGHT}]"],
    "pipeline (share_signals=false)": [
        "trainer=pipeline",
        f"pipeline.stages=[{FILTER},{REORDER},{WEIGHT}]",
        "trainer.share_signals=false",
    ],
    "filter alone": ["trainer=pipeline", f"pipeline.stages=[{FILTER}]"],
    "reorder alone": ["trainer=pipeline", f"pipeline.stages=[{REORDER}]"],
    "weight alone": ["trainer=pipeline", f"pipeline.stages=[{WEIGHT}]"],
}
STAGES = ("filter alone", "reorder alone", "weight alone")


def run(name: str, overrides: list[str], steps: int, update_step: int, out: Path) -> dict:
    common = [
        f"trainer.max_steps={steps}",
        "trainer.eval_steps=0",
        "trainer.eval_on_start=false",
        "trainer.max_eval_samples_per_domain=8",
        "trainer.logging_steps=0",
        "trainer.save_final_model=false",
        "trainer.disable_tqdm=true",
        "trainer.per_device_train_batch_size=16",
        "trainer.loss_reduction=sample",
        f"trainer.output_dir={out}",
    ]
    if "trainer=pipeline" in overrides:
        common.append(f"trainer.update_step={update_step}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    cmd = ["nice", "-n", "10", sys.executable, "-m", "dataflex.cli", *overrides, *common]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    last = {}
    metrics = out / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            last.update({k: v for k, v in json.loads(line).items() if k.startswith("pipeline/signal")})
    return {"wall": summary["wall_time_s"], "cpu": cpu, **last}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--update-step", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for i, (name, overrides) in enumerate(CONFIGS.items()):
                res = run(name, overrides, args.steps, args.update_step, Path(tmp) / f"{r}_{i}")
                results[name].append(res)
                print(f"repeat {r} {name}: {res}", flush=True)
    report = {}
    for clock in ("cpu", "wall"):
        med = {name: statistics.median(x[clock] for x in rows) for name, rows in results.items()}
        over = {name: med[name] - med["static"] for name in CONFIGS}
        print(
            f"\n{clock}: | run | median s | min | max | overhead vs static s | signal passes | signal rows |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, rows in results.items():
            values = [x[clock] for x in rows]
            print(
                f"| {name} | {med[name]:.2f} | {min(values):.2f} | {max(values):.2f} | {over[name]:.2f} | "
                f"{rows[-1].get('pipeline/signal_passes', '')} | {rows[-1].get('pipeline/signal_rows', '')} |"
            )
        shared, unshared = "pipeline (shared signals)", "pipeline (share_signals=false)"
        ratios = {
            "pipeline / sum of the stages' runs": med[shared] / sum(med[s] for s in STAGES),
            "pipeline overhead / sum of the stages' overheads": over[shared] / sum(over[s] for s in STAGES),
            "pipeline overhead, shared / not shared": over[shared] / over[unshared],
        }
        for k, v in ratios.items():
            print(f"{clock}: {k}: {v:.3f}")
        report[clock] = {"median": med, "overhead": over, "ratios": ratios}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
