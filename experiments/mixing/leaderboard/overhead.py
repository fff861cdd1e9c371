r"""Per-step overhead of each online mixer over static (uniform) sampling, interleaved: CPU seconds.

    nice -n 10 env OMP_NUM_THREADS=1 python experiments/mixing/leaderboard/overhead.py --out /tmp/overhead

The leaderboard's wall clock per block is at the mercy of the shared machine's load; process CPU time is
not (it counts only the time this process ran). Each repeat runs, in one process, uniform then the method,
for every method, on the embedded data with the leaderboard's model and settings; the overhead is the median
over repeats of (method CPU s) / (adjacent uniform CPU s). Proxy runs and sweeps are not in it: the
leaderboard charges them as compute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as lb  # noqa: E402

STEPS = 40


def methods(root: Path) -> dict[str, list[str]]:
    sched = lb.schedule_file(root, "embedded", lb.EMBEDDED, STEPS)
    return {
        "stratified": lb.static(STEPS, "stratified"),
        "random": [*lb.dynamic(STEPS, 10, 10), "component=random"],
        "odm": [*lb.dynamic(STEPS), "component=odm"],
        "odm_progress": [*lb.dynamic(STEPS), "component=odm", "component.reward=learning_progress"],
        "ado": [
            *lb.dynamic(STEPS),
            "component=ado",
            "component.start_step=20",
            "component.fit_interval=20",
            "component.fit_stride=1",
            "component.smooth_window=11",
        ],
        "aioli": [
            *lb.dynamic(STEPS, 0, lb.AIOLI["lp_steps"]),
            "component=aioli",
            *(f"component.{k}={v}" for k, v in lb.AIOLI.items()),
        ],
        "schedule": [*lb.dynamic(STEPS), "component=schedule", f"component.path={sched}"],
        "doremi_proxy": [
            *lb.dynamic(STEPS),
            "component=doremi",
            f"component.reference_model_path={root / 'reference' / 'final_model'}",
        ],
    }


def cpu_job(out: Path, overrides: list[str]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    lb.run_job(out, overrides)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--repeats", type=int, default=2)
    args = a.parse_args()
    root = args.out.resolve()
    common = lb.common(42, ["data=default"], eval_rows=8)
    lb.run_job(root / "reference", [*common, *lb.static(STEPS, "uniform"), "trainer.save_final_model=true"])
    rows: dict[str, list[float]] = {}
    for r in range(args.repeats):
        for name, overrides in methods(root).items():
            base, _ = cpu_job(
                root / f"r{r}" / f"uniform_before_{name}", [*common, *lb.static(STEPS, "uniform")]
            )
            cpu, _ = cpu_job(root / f"r{r}" / name, [*common, *overrides])
            rows.setdefault(name, []).append(cpu / base)
            print(f"repeat {r} {name}: {cpu:.1f} CPU s vs uniform {base:.1f} ({cpu / base:.2f}x)", flush=True)
    result = {k: {"ratios": v, "median": float(np.median(v))} for k, v in rows.items()}
    (HERE / "overhead.json").write_text(
        json.dumps({"steps": STEPS, "repeats": args.repeats, **result}, indent=1)
    )
    print("| method | CPU time vs uniform (median) | repeats |\n|---|---|---|")
    for k, v in result.items():
        print(f"| {k} | {v['median']:.2f}x | {', '.join(f'{x:.2f}' for x in v['ratios'])} |")


if __name__ == "__main__":
    main()
