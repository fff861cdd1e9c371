"""Steps/s of per-step batch selection (B = 2b candidates, b kept and trained) against static training on b.

Every run trains the embedded default tiny LLaMA (1.9M parameters, same init) on the embedded default data
through the training loop for `--steps` optimizer steps of b rows (`--batch`, default 16; cutoff 128
tokens): `trainer=static` on b, and `trainer=per_step` (PerStepTrainer) with each selector, which draws
B = `--candidates` (default 2b) rows per step and trains only the b kept. Full fine-tuning and LoRA (rank
8 on all linear layers). Each run is its own process (so its peak memory is its own: max RSS on CPU, max
allocated on CUDA); runs alternate method by method, repeat by repeat, so machine noise hits all alike; the
tables give medians and the ratio of the medians (steps/s of the method / steps/s of static). The wall clock
is the loop's own training time; the CPU clock is the process CPU time of `train()` (less sensitive to
other load on a shared machine). `rho_loss` uses another initialisation of the tiny model as a stand-in
reference (the cost is measured, not the quality); `greats` draws 4 validation rows of the target domain
per step.

    OMP_NUM_THREADS=1 python experiments/benchmarks/per_step/bench.py --steps 15 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("WANDB_MODE", "disabled")

METHODS = ("static", "uniform", "max_loss", "rho_loss", "grad_norm", "greats")
KINDS = ("full", "lora")


def _setup(kind: str, cutoff_len: int):
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData
    from dataflex.models.tiny import build_tiny_model

    extra = {"finetuning_type": "lora", "lora_rank": 8} if kind == "lora" else {}
    bundle = build_tiny_model(**extra)
    args = DataArguments(cutoff_len=cutoff_len)
    train = TokenizedData(DataEngine(args), bundle.tokenizer, cutoff_len)
    evaluation = TokenizedData(DataEngine(args, split="eval"), bundle.tokenizer, cutoff_len)
    return bundle, train, evaluation


def _selector(method: str, bundle, evaluation, val_rows: int, seed: int):
    from dataflex.models.tiny import build_tiny_model
    from dataflex.train.perstep.selectors import (
        GradNormPerStep,
        GreatsPerStep,
        MaxLossPerStep,
        RhoLossPerStep,
        UniformPerStep,
    )

    pad = bundle.tokenizer.pad_token_id
    if method == "uniform":
        return UniformPerStep(seed)
    if method == "max_loss":
        return MaxLossPerStep()
    if method == "rho_loss":  # a stand-in reference (another init): the cost, not the quality, is measured
        reference = build_tiny_model(seed=seed + 1).model.eval().requires_grad_(False)
        return RhoLossPerStep(reference)
    if method == "grad_norm":
        return GradNormPerStep()

    return GreatsPerStep(pad, eval_data=evaluation, val_size=val_rows, seed=seed, target_domain="target")


def one_run(method: str, kind: str, steps: int, batch: int, candidates: int, cutoff_len: int) -> dict:
    """Trains `steps` steps of one method through the training loop in this process: wall/CPU seconds per
    step and the peak memory."""
    import tempfile

    import torch

    from dataflex.tracking import TrackerGroup
    from dataflex.train.perstep.trainer import PerStepTrainer
    from dataflex.train.trainer.static import StaticTrainer

    bundle, train, evaluation = _setup(kind, cutoff_len)
    common = dict(
        max_steps=steps,
        per_device_train_batch_size=batch,
        eval_on_start=False,
        eval_steps=0,
        max_eval_samples_per_domain=1,
        save_final_model=False,
        disable_tqdm=True,
        logging_steps=steps,
        learning_rate=1e-3,
    )
    with tempfile.TemporaryDirectory() as tmp:
        parts = dict(
            bundle=bundle, train_data=train, eval_data=evaluation, trackers=TrackerGroup([]), run_dir=tmp
        )
        if method == "static":
            trainer = StaticTrainer(**parts, **common)
        else:
            selector = _selector(method, bundle, evaluation, 4, seed=0)
            trainer = PerStepTrainer(
                **parts, selector=selector, candidate_batch_size=candidates, log_selection=False, **common
            )
        cpu = time.process_time()
        summary = trainer.train()
        cpu = time.process_time() - cpu
    cuda = torch.cuda.is_available()
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "wall": summary["wall_time_s"] / steps,
        "cpu": cpu / steps,
        "peak_mib": peak,
        "device": "cuda" if cuda else "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="b: rows trained per step")
    parser.add_argument("--candidates", type=int, default=None, help="B: rows scored per step (default 2b)")
    parser.add_argument("--cutoff-len", type=int, default=128)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--json", default=None, help="write every run's numbers here")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    candidates = args.candidates or 2 * args.batch
    if args.one:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        out = one_run(args.one[0], args.one[1], args.steps, args.batch, candidates, args.cutoff_len)
        print("RESULT " + json.dumps(out), flush=True)
        return
    methods, kinds = args.methods.split(","), args.kinds.split(",")
    runs: dict[tuple[str, str], list[dict]] = {(m, k): [] for k in kinds for m in methods}
    for r in range(args.repeats):
        for kind in kinds:
            for method in methods:
                cmd = [sys.executable, __file__, "--one", method, kind, "--steps", str(args.steps)]
                cmd += ["--batch", str(args.batch), "--candidates", str(candidates)]
                cmd += ["--cutoff-len", str(args.cutoff_len)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                if done.returncode or not line:
                    sys.exit(f"{method}/{kind} failed:\n{done.stderr[-3000:]}")
                res = json.loads(line[-1][len("RESULT ") :])
                runs[(method, kind)].append(res)
                print(
                    f"repeat {r + 1}/{args.repeats} {kind} {method}: {res['wall'] * 1000:.1f} ms/step wall, "
                    f"{res['cpu'] * 1000:.1f} ms/step cpu, peak {res['peak_mib']:.0f} MiB",
                    flush=True,
                )
    device = next(iter(runs.values()))[0]["device"]
    print(
        f"\n{args.steps} steps x {args.repeats} alternating repeats, b={args.batch}, B={candidates}, "
        f"{args.cutoff_len} tokens, {device}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    for kind in kinds:
        base = statistics.median(x["wall"] for x in runs[("static", kind)]) if "static" in methods else None
        base_cpu = (
            statistics.median(x["cpu"] for x in runs[("static", kind)]) if "static" in methods else None
        )
        print(f"\n{kind}\n")
        print(
            "| method | median steps/s | ratio vs static (wall) | median wall ms/step | median CPU ms/step "
            "| ratio vs static (CPU) | peak MiB |"
        )
        print("|---|---|---|---|---|---|---|")
        for method in methods:
            rs = runs[(method, kind)]
            wall = statistics.median(x["wall"] for x in rs)
            cpu = statistics.median(x["cpu"] for x in rs)
            peak = statistics.median(x["peak_mib"] for x in rs)
            ratio = f"{base / wall:.2f}x" if base else "-"
            ratio_cpu = f"{base_cpu / cpu:.2f}x" if base_cpu else "-"
            print(
                f"| {method} | {1 / wall:.2f} | {ratio} | {wall * 1000:.1f} | {cpu * 1000:.1f} | {ratio_cpu} "
                f"| {peak:.0f} |"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({f"{m}/{k}": v for (m, k), v in runs.items()}, fh, indent=1)


if __name__ == "__main__":
    main()
