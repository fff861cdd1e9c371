"""Study: reorder patterns vs shuffle, and the pipeline presets vs their single stages, on the embedded data.

Every configuration trains the default tiny LLaMA (model=tiny) on the embedded 5-domain data (64 training rows
per domain, cutoff 128) for the same steps and global batch (16), seeds 42, 43, 44, in this process
(the trainer API; the same trainers `dataflex-run` builds), and is scored by the final eval loss
(token-weighted over all domains' 64 eval rows each) and the mean of the five per-domain eval losses.
Configurations run one after the other with all three seeds, so a stopped study leaves complete rows; the
results file is rewritten after every run and a re-run skips what it holds.

    OMP_NUM_THREADS=1 nice -n 10 python experiments/pipeline/run_study.py --steps 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

SEEDS = (42, 43, 44)
PATTERNS = ("shuffle", "sorting", "folding", "zigzag", "segment", "stair", "saw")
FILTER = {
    "kind": "select",
    "use": "loss",
    "mode": "filter",
    "keep_ratio": 0.5,
    "every": 20,
    "component": {"focus": "high", "focus_weight": 5.0, "temperature": 0.1},
}
ODM = {"kind": "mix", "use": "odm", "warmup_step": 5}
SAW = {"kind": "reorder", "component": {"pattern": "saw", "sections": 3, "folding_ratio": 0.075, "layers": 2}}
FOLDING = {"kind": "reorder", "component": {"pattern": "folding", "layers": 3}}
WEIGHT = {"kind": "weight", "use": "loss", "warmup_step": 5, "every": 1}
DRAW = {"kind": "select", "use": "loss", "mode": "draw"}
PRUNE = {"kind": "prune", "use": "infobatch", "every": 20, "component": {"prune_ratio": 0.5, "delta": 0.875}}
PIPELINES: dict[str, tuple[str, dict[str, Any]]] = {
    "static": ("static", {}),
    "pipeline=hierarchical": ("pipeline", {"stages": [FILTER, ODM, SAW, WEIGHT]}),
    "pipeline=select_then_reorder": ("pipeline", {"stages": [{**FILTER, "component": {}}, FOLDING]}),
    "pipeline=mix_then_weight": ("pipeline", {"stages": [ODM, WEIGHT]}),
    "pipeline=select_only": ("pipeline", {"stages": [DRAW]}),
    "pipeline=prune_then_mix": ("pipeline", {"stages": [PRUNE, ODM]}),
    "stage: loss filter 0.5 (focus high)": ("pipeline", {"stages": [FILTER]}),
    "stage: loss filter 0.5 (focus medium)": ("pipeline", {"stages": [{**FILTER, "component": {}}]}),
    "stage: ODM": ("pipeline", {"stages": [ODM]}),
    "stage: dynamic saw": ("pipeline", {"stages": [SAW]}),
    "stage: dynamic folding": ("pipeline", {"stages": [FOLDING]}),
    "stage: loss weights": ("pipeline", {"stages": [WEIGHT]}),
    "stage: InfoBatch prune": ("pipeline", {"stages": [PRUNE]}),
}
REORDER: dict[str, tuple[str, dict[str, Any]]] = {
    f"reorder: {p}": ("reorder", {"pattern": p, "update_step": 10}) for p in PATTERNS
}


def run(kind: str, args: dict[str, Any], seed: int, steps: int, run_dir: str) -> dict[str, float]:
    from dataflex.models.tiny import build_tiny_model
    from dataflex.tracking import TrackerGroup
    from dataflex.train.trainer.dynamic_reorder import DynamicReorderTrainer
    from dataflex.train.trainer.pipeline import PipelineTrainer
    from dataflex.train.trainer.static import StaticTrainer

    from helpers import small_data

    cls = {"static": StaticTrainer, "pipeline": PipelineTrainer, "reorder": DynamicReorderTrainer}[kind]
    torch.manual_seed(seed)
    bundle = build_tiny_model()
    trainer = cls(
        bundle=bundle,
        train_data=small_data(bundle.tokenizer, max_samples=64, cutoff_len=128),
        eval_data=small_data(bundle.tokenizer, max_samples=64, split="eval", cutoff_len=128),
        trackers=TrackerGroup([]),
        run_dir=run_dir,
        seed=seed,
        max_steps=steps,
        per_device_train_batch_size=16,
        loss_reduction="sample",
        disable_tqdm=True,
        eval_on_start=False,
        eval_steps=0,
        save_final_model=False,
        logging_steps=0,
        **({"update_step": 5} if kind == "pipeline" else {}),
        **args,
    )
    final = trainer.train()["final_eval"]
    domains = {k.removeprefix("eval/loss/"): v for k, v in final.items() if k.startswith("eval/loss/")}
    return {"eval_loss": final["eval/loss"], "domain_mean": statistics.mean(domains.values()), **domains}


def table(results: dict[str, dict[str, dict]], names: list[str], base: str) -> str:
    lines = [
        f"| run | eval loss, mean ± sd (3 seeds) | mean of domain losses | vs {base}, paired mean | wins |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        rows = results.get(name, {})
        if not all(str(s) in rows for s in SEEDS) or not all(str(s) in results.get(base, {}) for s in SEEDS):
            lines.append(f"| {name} | not run (seeds done: {sorted(rows)}) | | | |")
            continue
        vals = [rows[str(s)]["eval_loss"] for s in SEEDS]
        dom = [rows[str(s)]["domain_mean"] for s in SEEDS]
        diff = [rows[str(s)]["eval_loss"] - results[base][str(s)]["eval_loss"] for s in SEEDS]
        lines.append(
            f"| {name} | {statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f} | "
            f"{statistics.mean(dom):.4f} | {statistics.mean(diff):+.4f} | {sum(d < 0 for d in diff)}/3 |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default=str(REPO / "experiments" / "pipeline" / "results.json"))
    parser.add_argument("--tables-only", action="store_true", help="print the tables of the results file")
    parser.add_argument("--part", choices=("all", "pipelines", "reorder"), default="all")
    parser.add_argument("--reverse", action="store_true", help="last configuration first (a second process)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    results: dict[str, dict[str, dict]] = json.loads(out.read_text()) if out.is_file() else {}
    parts = {"all": {**PIPELINES, **REORDER}, "pipelines": PIPELINES, "reorder": REORDER}
    configs = {} if args.tables_only else parts[args.part]
    if args.reverse:
        configs = dict(reversed(list(configs.items())))
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (kind, cfg)) in enumerate(configs.items()):
            for seed in SEEDS:
                if str(seed) in results.get(name, {}):
                    continue
                res = run(kind, cfg, seed, args.steps, f"{tmp}/{i}_{seed}")
                results.setdefault(name, {})[str(seed)] = res
                out.write_text(json.dumps(results, indent=1))
                print(f"{name} seed {seed}: eval loss {res['eval_loss']:.4f}", flush=True)
    print(table(results, list(PIPELINES), "static"))
    print()
    print(table(results, list(REORDER), "reorder: shuffle"))


if __name__ == "__main__":
    main()
