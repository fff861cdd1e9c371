r"""The mixer leaderboard: every mixer at EQUAL TOTAL COMPUTE, 3 seeds, two corpora; then the table.

    nice -n 10 env OMP_NUM_THREADS=1 python experiments/mixing/leaderboard/run.py --out /tmp/leaderboard
    python experiments/mixing/leaderboard/run.py --out /tmp/leaderboard --summarize   # table + results.json

Compute is counted in training-step equivalents (one optimizer step of the global batch of 16 = 1; a
forward-only pass over r rows = r / (3 x 16): a backward costs two forwards). Every method gets `--budget`
of them, everything it runs before or beside its final run charged:
- uniform, stratified, random, ODM (loss and learning-progress rewards), ADO, the schedule: `budget` steps
  (their in-run bookkeeping is CPU work on losses the loop computes anyway; it shows in the wall clock);
- Aioli: its probe evaluations (1 + lp_rounds x K per round, `eval_max_per_domain` rows per domain each) are
  forwards: the final run trains the most steps T (a multiple of lp_steps) with T + charge(T) <= budget;
- DoReMi: the reference run (R steps) + the proxy (P steps, each with a reference-model forward: P x 4/3) +
  the final run at the proxy's averaged weights (budget - R - P x 4/3 steps);
- mixsearch: the sweep (runs x steps, plus each proxy run's eval forwards) + the final run at the proposed
  mixture. One sweep per corpus (seed 42) serves all three seeds, but each seed's row is charged all of it.
Each (corpus, seed) block runs its jobs back to back with uniform first, so wall-clock ratios against uniform
compare jobs run under the same machine load. Jobs whose summary.json exists are not run again (resumable).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE))
from late_corpus import SIZES as LATE_SIZES  # noqa: E402
from late_corpus import write_corpus  # noqa: E402

BATCH = 16  # global batch (per_device_train_batch_size, one process)
EVAL_ROWS = 50  # final eval rows per domain (the score; not charged: the same for every method)
EMBEDDED = {"greet": 2000, "arith": 2000, "reverse": 2000, "noise": 2000, "target": 2000}
METHODS = (
    *("uniform", "stratified", "random", "doremi", "odm", "odm_progress"),
    *("ado", "aioli", "mixsearch", "schedule"),
)
MODEL = [  # a 2-layer 64-wide tiny LLaMA (~0.12M parameters): the machine is 2 shared cores
    "model.hidden_size=64",
    "model.intermediate_size=128",
    "model.num_hidden_layers=2",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
]
# Aioli at this scale: 1 probe sweep of 2-step probes per 40-step round, 8 eval rows per domain per probe.
AIOLI = {"lp_rounds": 1, "lp_steps": 2, "round_steps": 40, "eval_max_per_domain": 8}
DOREMI_REF, DOREMI_PROXY = 12, 12  # steps of DoReMi's reference and proxy runs
SWEEP_RUNS, SWEEP_STEPS, SWEEP_EVAL = 8, 4, 16  # mixsearch's proxy sweep
SWEEP_CONSTRAINTS = ["--max-kl", "0.5", "--max-proportion", "0.6"]  # the README's example constraints


def common(seed: int, data: list[str], eval_rows: int = EVAL_ROWS) -> list[str]:
    return [
        *data,
        *MODEL,
        f"trainer.seed={seed}",
        f"trainer.per_device_train_batch_size={BATCH}",
        "trainer.eval_on_start=false",
        "trainer.eval_steps=0",
        f"trainer.max_eval_samples_per_domain={eval_rows}",
        "trainer.logging_steps=20",
        "trainer.disable_tqdm=true",
        "trainer.save_final_model=false",
    ]


def aioli_charge(steps: int, k: int) -> float:
    rounds = math.ceil(steps / AIOLI["round_steps"])
    rows = rounds * (1 + AIOLI["lp_rounds"] * k) * k * AIOLI["eval_max_per_domain"]
    return rows / (3 * BATCH)


def aioli_steps(budget: int, k: int) -> int:
    t = budget - budget % AIOLI["lp_steps"]
    while t + aioli_charge(t, k) > budget:
        t -= AIOLI["lp_steps"]
    return t


def sweep_charge(k: int) -> float:
    return SWEEP_RUNS * SWEEP_STEPS + SWEEP_RUNS * k * SWEEP_EVAL / (3 * BATCH)


def plan(budget: int, k: int) -> dict[str, dict[str, float]]:
    """Per method: the steps of its final run and the step-equivalents charged before/beside it."""
    doremi_pre = DOREMI_REF + DOREMI_PROXY * 4 / 3
    out = {m: {"steps": budget, "charged": 0.0} for m in METHODS}
    t = aioli_steps(budget, k)
    out["aioli"] = {"steps": t, "charged": aioli_charge(t, k)}
    out["doremi"] = {"steps": int(budget - doremi_pre), "charged": doremi_pre}
    out["mixsearch"] = {"steps": int(budget - sweep_charge(k)), "charged": sweep_charge(k)}
    return out


def dynamic(steps: int, warmup: int = 0, every: int = 1) -> list[str]:
    return [
        "trainer=dynamic_mix",
        f"trainer.warmup_step={warmup}",
        f"trainer.update_step={every}",
        f"trainer.update_times={(steps - warmup) // every}",
        "trainer.mixture_sample_rule=uniform",
    ]


def static(steps: int, rule: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "trainer=dynamic_mix",
        "trainer.static_mix=true",
        f"trainer.train_step={steps}",
        f"trainer.mixture_sample_rule={rule}",
        *extra,
    ]


def run_job(out: Path, overrides: list[str]) -> float:
    """One dataflex-run job in this process (composed as the command line would; no process start-up per
    job); returns its wall time (s). Skipped when already complete."""
    if (out / "summary.json").is_file():
        return 0.0
    if out.exists():  # an interrupted job: start it again
        import shutil

        shutil.rmtree(out)
    from hydra import compose, initialize_config_dir

    import dataflex.cli  # noqa: F401  (registers the schemas)
    from dataflex.config.paths import config_dir
    from dataflex.run import run

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"trainer.output_dir={out}"])
    start = time.perf_counter()
    run(cfg, out)
    return time.perf_counter() - start


def corpora(root: Path) -> dict[str, tuple[list[str], dict[str, int]]]:
    info = root / "late_corpus" / "dataset_info.yaml"
    if not info.is_file():
        write_corpus(info.parent)
    return {
        "embedded": (["data=default"], EMBEDDED),
        "late": (["data=custom", f"data.dataset={info}"], LATE_SIZES),
    }


def mixsearch(root: Path, corpus: str, data: list[str], log: Path) -> Path:
    out = root / corpus / "mixsearch"
    if (out / "mixture.json").is_file():
        return out / "mixture.json"
    overrides = common(42, data, SWEEP_EVAL)
    cmd = [sys.executable, "-m", "dataflex.mixing.search", "--out", str(out), "--runs", str(SWEEP_RUNS)]
    cmd += ["--steps", str(SWEEP_STEPS), "--seed", "0", *SWEEP_CONSTRAINTS, "--", *overrides]
    with open(log, "a") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, cwd=root)
    return out / "mixture.json"


def schedule_file(root: Path, corpus: str, sizes: dict[str, int], steps: int) -> Path:
    """Temperature annealing: stratified (p ~ n_d) at step 0, linearly to uniform at the last step."""
    names = list(sizes)
    n = np.asarray([sizes[d] for d in names], dtype=np.float64)
    path = root / corpus / "schedule.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    points = [
        {"step": 0, "proportions": (n / n.sum()).tolist()},
        {"step": steps, "proportions": [1.0 / len(names)] * len(names)},
    ]
    path.write_text(json.dumps({"domains": names, "points": points, "interpolation": "linear"}))
    return path


def block(root: Path, corpus: str, data: list[str], sizes: dict[str, int], seed: int, budget: int) -> None:
    k = len(sizes)
    p = plan(budget, k)
    d = root / corpus / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    c = common(seed, data)
    jobs: list[tuple[str, list[str]]] = [
        ("uniform", static(budget, "uniform")),
        ("stratified", static(budget, "stratified")),
        ("random", [*dynamic(budget, 20, 20), "component=random", f"component.seed={seed}"]),
        ("odm", [*dynamic(budget), "component=odm"]),
        ("odm_progress", [*dynamic(budget), "component=odm", "component.reward=learning_progress"]),
        (
            "ado",
            [
                *dynamic(budget),
                "component=ado",
                "component.start_step=20",
                "component.fit_interval=20",
                "component.fit_stride=1",
                "component.smooth_window=11",
            ],
        ),
        (
            "aioli",
            [
                *dynamic(int(p["aioli"]["steps"]), 0, AIOLI["lp_steps"]),
                "component=aioli",
                *(f"component.{key}={v}" for key, v in AIOLI.items()),
                f"component.seed={seed}",
            ],
        ),
        (
            "schedule",
            [*dynamic(budget), "component=schedule", f"component.path={root / corpus / 'schedule.json'}"],
        ),
        (
            "doremi_reference",
            [*static(DOREMI_REF, "uniform"), "trainer.save_final_model=true"],
        ),
        (
            "doremi_proxy",
            [
                *dynamic(DOREMI_PROXY),
                "component=doremi",
                f"component.reference_model_path={d / 'doremi_reference' / 'final_model'}",
            ],
        ),
        (
            "doremi",
            static(
                int(p["doremi"]["steps"]),
                "mixture",
                (f"trainer.mixture_proportions_file={d / 'doremi_proxy' / 'doremi_weights.json'}",),
            ),
        ),
        (
            "mixsearch",
            static(
                int(p["mixsearch"]["steps"]),
                "mixture",
                (f"trainer.mixture_proportions_file={root / corpus / 'mixsearch' / 'mixture.json'}",),
            ),
        ),
    ]
    for name, overrides in jobs:
        # the final save of the reference overrides common()'s save_final_model=false (later wins)
        wall = run_job(d / name, [*c, *overrides])
        if wall:
            print(f"[{time.strftime('%H:%M:%S')}] {corpus} seed {seed} {name}: {wall:.0f}s", flush=True)


def execute(root: Path, seeds: list[int], budget: int, workers: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    cs = corpora(root)
    for corpus, (_, sizes) in cs.items():
        schedule_file(root, corpus, sizes, budget)
    with ThreadPoolExecutor(workers) as pool:  # the two sweeps first (the mixsearch rows need them)
        list(pool.map(lambda c: mixsearch(root, c, cs[c][0], root / f"{c}_mixsearch.log"), cs))
    tasks = [(root, c, cs[c][0], cs[c][1], s, budget) for s in seeds for c in cs]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in [pool.submit(block, *t) for t in tasks]:
            done.result()


# ------------------------------------------------------------------------------------------- summary
def _summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def _losses(summary: dict, names: list[str]) -> np.ndarray:
    return np.asarray([summary["final_eval"][f"eval/loss/{n}"] for n in names])


def summarize(root: Path, seeds: list[int], budget: int) -> dict:
    results: dict = {"budget": budget, "batch": BATCH, "seeds": seeds, "corpora": {}}
    for corpus, sizes in (("embedded", EMBEDDED), ("late", LATE_SIZES)):
        names, p = list(sizes), plan(budget, len(sizes))
        sweep_wall = sum(
            _summary(j)["wall_time_s"]
            for j in (root / corpus / "mixsearch" / "sweep").iterdir()
            if (j / "summary.json").is_file()
        )
        rows = {}
        for m in METHODS:
            per_seed = []
            for s in seeds:
                d = root / corpus / f"seed{s}"
                if not (d / m / "summary.json").is_file():
                    continue
                summ, base = _summary(d / m), _summary(d / "uniform")
                wall = summ["wall_time_s"]
                if m == "doremi":
                    wall += _summary(d / "doremi_reference")["wall_time_s"]
                    wall += _summary(d / "doremi_proxy")["wall_time_s"]
                if m == "mixsearch":
                    wall += sweep_wall
                loss = _losses(summ, names)
                per_seed.append(
                    {
                        "seed": s,
                        "losses": dict(zip(names, loss.tolist())),
                        "average": float(loss.mean()),
                        "worst": float(loss.max()),
                        "worst_domain": names[int(loss.argmax())],
                        "wall_ratio": wall / base["wall_time_s"],
                        "step_time_ratio": (summ["wall_time_s"] / summ["steps"])
                        / (base["wall_time_s"] / base["steps"]),
                    }
                )
            rows[m] = {**p[m], "per_seed": per_seed}
        results["corpora"][corpus] = {"domains": names, "sizes": sizes, "methods": rows}
    return results


def table(results: dict) -> str:
    lines = []
    for corpus, c in results["corpora"].items():
        strat = {r["seed"]: r for r in c["methods"]["stratified"]["per_seed"]}
        lines += [
            f"\n### {corpus} ({', '.join(f'{d} {n}' for d, n in c['sizes'].items())} training rows)\n",
            "| method | final steps | charged | average eval loss | worst-domain eval loss | worst domain "
            "| avg better than stratified | wall clock vs uniform (all runs) | s/step vs uniform |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for m, row in c["methods"].items():
            ps = row["per_seed"]
            if not ps:
                continue
            avg, worst = np.array([r["average"] for r in ps]), np.array([r["worst"] for r in ps])
            wins = sum(r["average"] < strat[r["seed"]]["average"] for r in ps if r["seed"] in strat)
            domains = sorted({r["worst_domain"] for r in ps})
            lines.append(
                f"| {m} | {row['steps']} | {row['charged']:.1f} | {avg.mean():.3f} ± {avg.std():.3f} "
                f"| {worst.mean():.3f} ± {worst.std():.3f} | {'/'.join(domains)} "
                f"| {'—' if m == 'stratified' else f'{wins} of {len(ps)}'} "
                f"| {np.median([r['wall_ratio'] for r in ps]):.2f}x "
                f"| {np.median([r['step_time_ratio'] for r in ps]):.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--out", type=Path, required=True, help="where the runs go (not the repo)")
    a.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    a.add_argument("--budget", type=int, default=80, help="step-equivalents per method")
    a.add_argument("--workers", type=int, default=2, help="blocks run side by side")
    a.add_argument("--summarize", action="store_true", help="only read the runs: table + results.json")
    args = a.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = args.out.resolve()
    if not args.summarize:
        execute(root, args.seeds, args.budget, args.workers)
    results = summarize(root, args.seeds, args.budget)
    (HERE / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
