"""The prepared GPU check: four trainers x loss/memory variants on a ~100M-parameter LLaMA built from config
(32k vocabulary, bf16), one table of steps/s, tokens/s, peak GPU memory and failures.

Every job runs in this process through `dataflex.run.run` (the same path as `dataflex-run`), one after the
other, each with its own run dir; a job that raises is a row with its error, the rest still run. Rows are
written after every job, so a run cut by the time limit still leaves its table.

    bash experiments/benchmarks/gpu/run.sh                 # on a CUDA GPU (<= 8 minutes)
    DRY_RUN=1 bash experiments/benchmarks/gpu/run.sh       # CPU, tiny shapes, 2 steps per job (tests)
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import traceback
from pathlib import Path

JOBS = {
    "static": ["trainer=static"],
    "dynamic_mix/odm": ["trainer=dynamic_mix", "component=odm"],
    "dynamic_select/less": ["trainer=dynamic_select", "component=less", "trainer.target_domain=target"],
    "dynamic_weight/loss": ["trainer=dynamic_weight", "component=loss"],
}
VARIANTS = {
    "plain": ["trainer.loss_impl=plain", "trainer.gradient_checkpointing=false"],
    "chunked+gc": ["trainer.loss_impl=chunked", "trainer.gradient_checkpointing=true"],
    "liger+gc": ["trainer.loss_impl=liger", "trainer.gradient_checkpointing=true"],
}
# ~100M parameters: 32000 x 768 tied embedding (24.6M) + 12 layers x 6.3M.
REAL = dict(
    model=[
        "model.hidden_size=768",
        "model.intermediate_size=2048",
        "model.num_hidden_layers=12",
        "model.num_attention_heads=12",
        "model.num_key_value_heads=12",
        "model.vocab_size=32000",
        "model.max_position_embeddings=1024",
        "data.cutoff_len=512",
    ],
    batch=16,
    steps=dict(total=24, warmup=8, update=8, times=2),
    precision="trainer.bf16=true",
)
DRY = dict(
    model=[
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_hidden_layers=1",
        "model.num_attention_heads=2",
        "model.num_key_value_heads=2",
        "model.vocab_size=4096",
        "data.cutoff_len=64",
        "data.max_samples=32",
    ],
    batch=4,
    steps=dict(total=2, warmup=1, update=1, times=1),
    precision="trainer.bf16=false",
)


def schedule(job: str, steps: dict, batch: int) -> list[str]:
    """The same number of optimizer steps for every job."""
    if job == "static":
        return [f"trainer.max_steps={steps['total']}"]
    if job.startswith("dynamic_weight"):
        return [f"trainer.max_steps={steps['total']}", f"trainer.warmup_step={steps['warmup']}"]
    sched = [
        f"trainer.warmup_step={steps['warmup']}",
        f"trainer.update_step={steps['update']}",
        f"trainer.update_times={steps['times']}",
    ]
    if job.startswith("dynamic_select"):  # score a pool of 2 selections' worth, not all 10k samples
        sched.append(f"trainer.candidate_pool_size={2 * steps['update'] * batch}")
    return sched


def overrides(job: str, variant: str, shapes: dict, run_dir: Path) -> list[str]:
    return [
        *JOBS[job],
        *VARIANTS[variant],
        *shapes["model"],
        shapes["precision"],
        *schedule(job, shapes["steps"], shapes["batch"]),
        f"trainer.per_device_train_batch_size={shapes['batch']}",
        "trainer.eval_on_start=false",
        "trainer.eval_steps=0",
        "trainer.max_eval_samples_per_domain=16",
        "trainer.save_final_model=false",
        "trainer.logging_steps=4",
        "trainer.disable_tqdm=true",
        f"trainer.output_dir={run_dir}",
    ]


def run_job(job: str, variant: str, shapes: dict, out: Path) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    import dataflex.cli  # noqa: F401  (schemas and resolvers)
    from dataflex.config.paths import config_dir
    from dataflex.run import run

    run_dir = out / "runs" / f"{job.replace('/', '_')}__{variant}"
    row = {
        "job": job,
        "variant": variant,
        "steps_per_s": None,
        "tokens_per_s": None,
        "peak_gpu_mib": None,
        "wall_s": None,
        "error": "",
    }
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=overrides(job, variant, shapes, run_dir))
        summary = run(cfg, run_dir)
        row.update(
            steps_per_s=summary["steps"] / summary["wall_time_s"], tokens_per_s=summary["train_tokens_per_s"]
        )
    except Exception as exc:  # noqa: BLE001 - a failing job is a row of the table, not the end of the check
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        (out / "errors.log").open("a").write(f"== {job} {variant}\n{traceback.format_exc()}\n")
    row["wall_s"] = time.perf_counter() - start
    if cuda:
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def write_table(rows: list[dict], out: Path, header: str) -> None:
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    lines = [
        header,
        "",
        "| job | variant | steps/s | tokens/s | peak GPU MiB | wall s | error |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['job']} | {r['variant']} | {fmt(r['steps_per_s'], '.2f')} | {fmt(r['tokens_per_s'], '.0f')} | "
        f"{fmt(r['peak_gpu_mib'], '.0f')} | {fmt(r['wall_s'], '.1f')} | {r['error'] or ''} |"
        for r in rows
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, 2 steps per job")
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: run with DRY_RUN=1 (or --dry-run) for the CPU dry run.")
    shapes = DRY if args.dry_run else REAL
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    header = (
        f"{'DRY RUN (CPU, tiny shapes)' if args.dry_run else 'GPU check'}: {device}, "
        f"torch {torch.__version__}, "
        f"model {' '.join(shapes['model'])}, batch {shapes['batch']}, {shapes['precision']}"
    )
    rows = []
    for job in args.jobs:
        for variant in args.variants:
            rows.append(run_job(job, variant, shapes, out))
            write_table(rows, out, header)
            print(json.dumps(rows[-1]), flush=True)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
