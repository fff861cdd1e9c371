"""The prefetching loader: steps/s with and without DataLoader workers, and against another checkout.

Every case is a real `dataflex-run` (a subprocess; PYTHONPATH = the checkout under test) and reads
`summary.json`: steps / wall_time_s of the training loop. Runs of the compared variants alternate
(A B A B ...) so load on the machine hits both alike; the table gives medians and the ratio.

    # collation a visible share of the step: workers 0 vs 2 on this checkout
    python experiments/benchmarks/data_scale/bench_loader.py collation --repeats 5
    # the embedded default, this checkout vs another (e.g. `git worktree add /tmp/base_loader 00a941c`)
    python experiments/benchmarks/data_scale/bench_loader.py default --base /tmp/base_loader --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[3]

TINY = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
]
COMMON = [
    "trainer.disable_tqdm=true",
    "trainer.save_final_model=false",
    "trainer.eval_on_start=false",
    "trainer.eval_steps=0",
    "trainer.logging_steps=0",
]
CASES = {
    # 512 pretrain blocks of 16 tokens per step through a 1-layer 32-dim model (vocabulary 640): reading the
    # items from the store and collating them is a visible share of the step
    "collation": [
        "data.mode=pretrain",
        "data.cutoff_len=16",
        "trainer.per_device_train_batch_size=512",
        "trainer.max_steps=20",
        *TINY,
    ],
    # `dataflex-run` as it ships (embedded data, tiny default model), fewer steps
    "default": ["trainer.max_steps=60"],
}


# `dataflex-run` in this process; at exit, the CPU seconds of the training process itself (every thread of
# it, not its loader worker processes) and of its children (the workers) go to stderr
RUN_WITH_CPU = (
    "import atexit, json, resource, runpy, sys\n"
    "def _cpu():\n"
    "    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "    cpu = [me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime]\n"
    "    print('CPU ' + json.dumps(cpu), file=sys.stderr)\n"
    "atexit.register(_cpu)\n"
    "sys.argv = ['dataflex-run', *sys.argv[1:]]\n"
    "runpy.run_module('dataflex.cli', run_name='__main__')\n"
)


def one_run(tree: Path, overrides: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "WANDB_MODE": "offline",
            "HF_HUB_OFFLINE": "1",
        }
        cmd = [
            sys.executable,
            "-c",
            RUN_WITH_CPU,
            *COMMON,
            *overrides,
            f"trainer.output_dir={out}",
            f"hydra.run.dir={out}/hydra",
        ]
        proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        summary = json.loads((Path(out) / "summary.json").read_text())
        line = [x for x in proc.stderr.splitlines() if x.startswith("CPU ")][-1]
        main_cpu, worker_cpu = json.loads(line[4:])
        return {
            "steps_per_s": summary["steps"] / summary["wall_time_s"],
            "main_cpu_s": main_cpu,
            "worker_cpu_s": worker_cpu,
        }


def compare(variants: dict[str, tuple[Path, list[str]]], repeats: int) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (tree, overrides) in variants.items():
            results[name].append(one_run(tree, overrides))
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=sorted(CASES))
    ap.add_argument("--base", type=Path, help="another checkout to compare with (num_workers=0 on both)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    case = CASES[args.case]
    if args.base is not None:
        variants = {f"base {args.base}": (args.base, case), "this checkout": (HERE, case)}
    else:
        variants = {
            "workers=0": (HERE, [*case, "trainer.dataloader_num_workers=0"]),
            f"workers={args.workers}": (HERE, [*case, f"trainer.dataloader_num_workers={args.workers}"]),
        }
    results = compare(variants, args.repeats)
    names = list(results)
    med = {n: {k: statistics.median(r[k] for r in results[n]) for k in results[n][0]} for n in names}
    print(
        "| variant | median steps/s | runs | CPU s of the training process | CPU s of loader workers |\n"
        "|---|---|---|---|---|"
    )
    for name in names:
        runs = ", ".join(f"{r['steps_per_s']:.3f}" for r in results[name])
        m = med[name]
        print(
            f"| {name} | {m['steps_per_s']:.3f} | {runs} | {m['main_cpu_s']:.1f} | {m['worker_cpu_s']:.1f} |"
        )
    ratio = med[names[1]]["steps_per_s"] / med[names[0]]["steps_per_s"]
    print(f"\nratio {names[1]} / {names[0]} (medians): {ratio:.3f}; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
