"""DataFlex (this repo, `dataflex-run`) beside DataFlex 1.1.0 (the PyPI peer) on the peer's own jobs.

usage:
    PEER=/tmp/peer bash ../shared/peer_dataflex/setup_venv.sh          # once (see that folder's README)
    python experiments/benchmarks/vs_dataflex/bench.py --peer /tmp/peer --repeats 3 --out results.json
    # subset: --jobs static_lora,select_loss ; our side only: --no-peer

For each repeat and each job, the peer's run (`run_one.sh NAME` of ../shared/peer_dataflex) and ours run one
after the other, the order alternating every repeat, so both see the same machine load. Both sides use
OMP_NUM_THREADS=1. Reported per job: medians over the repeats of steps/s (optimizer steps over the training
loop's wall time, component updates included: the peer's `train_runtime`, our `summary.json` wall time),
steps/s without the updates, seconds per component update (mean of a run's updates; the peer's harness times
`dataflex_next_indices`, ours `_run_update`/`_update`), and for dynamic_weight the seconds of a weighted step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
DEFAULT_HARNESS = REPO.parent.parent / "shared" / "peer_dataflex"

# The peer's common settings (configs/*.yaml there): its tiny Qwen2 + tokenizer, its dataset_info.json,
# LoRA r8/alpha16 on all linear layers, cutoff 128, batch 4, lr 1e-3 cosine, no warmup, seed 42.
COMMON = [
    "model=hf",
    "model.name_or_path={peer}/tiny_model",
    "model.finetuning_type=lora",
    "model.lora_rank=8",
    "model.lora_alpha=16",
    "model.lora_target=[all]",
    "data=custom",
    "data.dataset='arith,revstr,upper'",
    "data.dataset_dir={peer}/data",
    "data.cutoff_len=128",
    "trainer.per_device_train_batch_size=4",
    "trainer.gradient_accumulation_steps=1",
    "trainer.learning_rate=1e-3",
    "trainer.lr_scheduler_type=cosine",
    "trainer.warmup_ratio=0.0",
    "trainer.seed=42",
    "trainer.logging_steps=1",
    "trainer.disable_tqdm=true",
    "trainer.eval_on_start=false",
    "trainer.overwrite_output_dir=true",
]
SCHEDULE = ["trainer.warmup_step=4", "trainer.update_step=4", "trainer.update_times=2"]
MIX = [
    "trainer=dynamic_mix",
    "trainer.mixture_sample_rule=mixture",
    "trainer.init_mixture_proportions=[0.34,0.33,0.33]",
    *SCHEDULE,
]
LESS = [
    "trainer=dynamic_select",
    "component=less",
    *SCHEDULE,
    "component.proj_dim=512",
    "component.gradient_type=adam",
    "component.seed=123",
    "component.target_dataset=eval_mix",
    "component.target_split=train",
    "component.target_max_samples=64",
    "trainer.candidate_pool_size=null",
]  # the peer scores all 1200

# job -> (peer config name or None, our overrides); components_cpu.yaml of the peer holds its parameters.
JOBS: dict[str, tuple[str | None, list[str]]] = {
    "static_lora": ("static_lora", ["trainer=static", "trainer.max_steps=20"]),
    "static_full": ("static_full", ["trainer=static", "trainer.max_steps=20", "model.finetuning_type=full"]),
    "mix_random": ("mix_random", [*MIX, "component=random", "component.seed=42"]),
    "mix_odm": (
        "mix_odm",
        [
            *MIX,
            "component=odm",
            "component.alpha=0.9",
            "component.reward_scale=15.0",
            "component.min_exploration_rate=0.03",
        ],
    ),
    "mix_doremi": (
        "mix_doremi",
        [
            *MIX,
            "component=doremi",
            "component.reference_model_path={ours}/static_full/final_model",
            "component.eta=0.1",
            "component.smoothing=0.01",
        ],
    ),
    "select_random": (
        "select_random",
        ["trainer=dynamic_select", "component=random", *SCHEDULE, "component.seed=42"],
    ),
    "select_loss": (
        "select_loss",
        ["trainer=dynamic_select", "component=loss", *SCHEDULE, "component.focus=medium"],
    ),
    "select_less": ("select_less", [*LESS, "component.proj_type=sparse"]),
    "select_less_dense": ("select_less", [*LESS, "component.proj_type=rademacher"]),
    "weight_loss": (
        "weight_loss",
        [
            "trainer=dynamic_weight",
            "component=loss",
            "component.strategy=linupper",
            "component.delta=1.0",
            "trainer.warmup_step=2",
            "trainer.max_steps=10",
        ],
    ),
}


def run_peer(name: str, harness: Path, peer: Path, log: Path) -> dict:
    # never our PYTHONPATH: the peer's package is also called `dataflex`
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "PEER": str(peer),
        "OMP_NUM_THREADS": "1",
    }
    if name == "select_less":
        env["PEER_LESS_DTYPE"] = (
            "float32"  # the peer harness's opt-in: fp16 TRAK projection is ~7x slower on CPU
        )
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(harness / "run_one.sh"), name], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    timing_path = peer / "runs" / "_logs" / name / "peer_timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    log.write_text(proc.stdout + proc.stderr)
    metrics = timing.get("train_metrics", {})
    steps, runtime = timing.get("global_step"), metrics.get("train_runtime")
    updates = [u["seconds"] for u in timing.get("component_updates", [])]
    return {
        "ok": proc.returncode == 0 and bool(steps),
        "wall_s": wall,
        "steps": steps,
        "loop_s": runtime,
        "updates_s": updates,
        "weighted_step_s": timing.get("weighted_steps", []),
        "unweighted_step_s": timing.get("unweighted_steps", []),
    }


def run_ours(job: str, overrides: list[str], out_root: Path, log: Path) -> dict:
    run_dir = out_root / job
    timing = out_root / "_timing" / f"{job}.json"
    timing.unlink(missing_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [
        sys.executable,
        str(HERE / "ours_run.py"),
        str(timing),
        *overrides,
        f"trainer.output_dir={run_dir}",
        f"hydra.run.dir={out_root / '_hydra' / job}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(out_root))
    wall = time.perf_counter() - start
    log.write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
    t = json.loads(timing.read_text()) if timing.is_file() else {}
    summary = t.get("summary") or {}
    steps = t.get("steps", [])
    return {
        "ok": proc.returncode == 0 and bool(summary),
        "wall_s": wall,
        "steps": summary.get("steps"),
        "loop_s": summary.get("wall_time_s"),
        "updates_s": [u["seconds"] for u in t.get("updates", [])],
        "weighted_step_s": [s["seconds"] for s in steps if s["weighted"]],
        "unweighted_step_s": [s["seconds"] for s in steps if s["weighted"] is False],
        "tokens_per_s": summary.get("train_tokens_per_s"),
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def job_stats(runs: list[dict]) -> dict:
    ok = [r for r in runs if r.get("ok")]

    def sps(r, excl=False):
        busy = sum(r["updates_s"]) if excl else 0.0
        return r["steps"] / max(r["loop_s"] - busy, 1e-9) if r.get("loop_s") else None

    return {
        "runs": len(runs),
        "ok": len(ok),
        "steps_per_s": _median([sps(r) for r in ok]),
        "steps_per_s_excl_updates": _median([sps(r, True) for r in ok]),
        "update_s": _median([_mean(r["updates_s"]) for r in ok]),
        "weighted_step_s": _median([_mean(r["weighted_step_s"]) for r in ok]),
        "unweighted_step_s": _median([_mean(r["unweighted_step_s"]) for r in ok]),
        "wall_s": _median([r["wall_s"] for r in ok]),
    }


def _fmt(v, nd=3) -> str:
    return "–" if v is None else f"{v:.{nd}g}"


def table(results: dict) -> str:
    lines = [
        "| job | peer steps/s | ours steps/s | ratio (≥1 wanted) | peer s/update | ours s/update | "
        "speed-up (≥10 wanted) | peer wall s | ours wall s | ok (peer/ours) |",
        "|---|" + "---:|" * 9,
    ]
    for job, r in results["jobs"].items():
        p, o = r["peer"], r["ours"]
        ratio = o["steps_per_s"] / p["steps_per_s"] if o["steps_per_s"] and p["steps_per_s"] else None
        pu, ou = p["update_s"], o["update_s"]
        if pu is None and p["weighted_step_s"] is not None:  # dynamic_weight: the weighted step is the update
            pu, ou = p["weighted_step_s"], o["weighted_step_s"]
        speed = pu / ou if pu and ou else None
        lines.append(
            f"| {job} | {_fmt(p['steps_per_s'])} | {_fmt(o['steps_per_s'])} | {_fmt(ratio)} | {_fmt(pu)} | "
            f"{_fmt(ou)} | {_fmt(speed)} | {_fmt(p['wall_s'])} | {_fmt(o['wall_s'])} | "
            f"{p['ok']}/{p['runs']}, {o['ok']}/{o['runs']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--peer", default=os.environ.get("PEER"), help="the peer's folder ($PEER of setup_venv.sh)"
    )
    ap.add_argument("--harness", default=str(DEFAULT_HARNESS), help="the peer harness (run_one.sh, configs/)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated subset of {','.join(JOBS)}")
    ap.add_argument("--work", default=None, help="our run dirs and logs (default: $PEER/ours)")
    ap.add_argument("--no-peer", action="store_true", help="run our side only (a dry run of the harness)")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args()
    jobs = [j for j in args.jobs.split(",") if j]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        sys.exit(f"--jobs: unknown {unknown}; choose from {list(JOBS)}")
    if not args.peer:
        sys.exit(
            "--peer (or $PEER) is required: the folder setup_venv.sh / run_all.sh of the peer harness built"
        )
    peer, harness = Path(args.peer).resolve(), Path(args.harness).resolve()
    needed = [peer / "tiny_model" / "config.json", peer / "data" / "dataset_info.json"]
    if not args.no_peer:
        needed += [peer / "venv" / "bin" / "dataflex-cli", harness / "run_one.sh"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        sys.exit(
            f"missing {missing}: build the peer first (PEER={peer} bash {harness}/setup_venv.sh, then its "
            "make_tiny_model.py and make_data.py; see its README)"
        )
    if "mix_doremi" in jobs and "static_full" not in jobs:
        sys.exit("mix_doremi needs static_full (its reference model) in --jobs, before it")
    work = Path(args.work or peer / "ours").resolve()
    (work / "_logs").mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, list]] = {j: {"peer": [], "ours": []} for j in jobs}
    peer_done: dict[tuple[int, str], dict] = {}  # one peer run per (repeat, peer config)
    for rep in range(args.repeats):
        for job in jobs:
            peer_name, ours = JOBS[job]
            overrides = [o.format(peer=peer, ours=work) for o in COMMON + ours]
            sides = ["peer", "ours"] if rep % 2 == 0 else ["ours", "peer"]
            for side in sides:
                if side == "peer" and (args.no_peer or peer_name is None):
                    continue
                log = work / "_logs" / f"{job}.{side}.{rep}.log"
                if side == "peer" and (rep, peer_name) in peer_done:  # e.g. select_less_dense: same peer job
                    r = peer_done[(rep, peer_name)]
                else:
                    r = (
                        run_peer(peer_name, harness, peer, log)
                        if side == "peer"
                        else run_ours(job, overrides, work, log)
                    )
                if side == "peer":
                    peer_done[(rep, peer_name)] = r
                runs[job][side].append(r)
                print(
                    f"[rep {rep}] {job:<18} {side:<4} ok={r['ok']} wall={r['wall_s']:.1f}s "
                    f"steps={r['steps']} "
                    f"loop={_fmt(r['loop_s'])}s updates={[round(u, 3) for u in r['updates_s']]}",
                    flush=True,
                )
                results = write_results(
                    args, jobs, runs
                )  # after every run: a cut-short run keeps what it has
    print(table(results))


def write_results(args, jobs: list[str], runs: dict) -> dict:
    results = {
        "repeats": args.repeats,
        "command": " ".join(sys.argv),
        "jobs": {j: {side: job_stats(runs[j][side]) for side in ("peer", "ours")} for j in jobs},
        "raw": runs,
    }
    Path(args.out).write_text(json.dumps(results, indent=2))
    Path(args.out).with_suffix(".md").write_text(table(results) + "\n")
    return results


if __name__ == "__main__":
    main()
