r"""Per-sample gradient features: batched hooks/einsum vs a batch-size-1 autograd loop vs one plain batched
backward (the practical limit), on the embedded tiny model with full and LoRA fine-tuning.

    OMP_NUM_THREADS=1 python experiments/benchmarks/grad_features/bench_grad_features.py \
        --repeats 7 --batch 16

Timing: per fine-tuning type, one process runs every method once per round, `--repeats` rounds after a
warm-up round (interleaved, so load drift on the shared machine hits all methods alike); medians are
reported. Memory: each (fine-tuning, method) runs once in its own process; its peak is the resident set
high-water mark above the level after loading model and data. Methods:
- plain:   one batched forward + backward of the mean loss (gradients summed into .grad, not per sample)
- loop:    per-sample gradients by one forward + autograd.grad per sample (batch size 1), flattened
- batched: per-sample gradients of the whole batch from one forward + one backward (dataflex.train.signals)
- batched+sparse8192 / batched+rademacher512: the same, projected on the fly (LESS-style features)
- kronecker8192: Kronecker-factored projection (budget 8192) without forming the per-sample gradients
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

METHODS = ["plain", "loop", "batched", "batched+sparse8192", "batched+rademacher512", "kronecker8192"]


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _setup(finetuning: str, batch_size: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData, collate
    from dataflex.models.tiny import build_tiny_model
    from dataflex.train.signals.gradients import gradient_features, num_trainable, trainable_parameters
    from dataflex.train.signals.kronecker import KroneckerProjector
    from dataflex.train.signals.losses import per_sample_losses
    from dataflex.train.signals.projection import RandomProjector

    bundle = build_tiny_model(finetuning_type=finetuning)
    model = bundle.model.eval()
    pad = bundle.tokenizer.pad_token_id
    data = TokenizedData(DataEngine(DataArguments(max_samples=40)), bundle.tokenizer, cutoff_len=128)
    ids = list(range(0, len(data), len(data) // batch_size))[:batch_size]  # every domain, mixed lengths
    batch = collate([data[i] for i in ids], pad)
    params = [p for _, p in trainable_parameters(model)]
    dim = num_trainable(model)

    def plain():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_sample_losses(logits, batch["labels"]).mean.mean().backward()
        model.zero_grad(set_to_none=True)

    def loop():
        rows = []
        for i in ids:
            one = collate([data[i]], pad)
            logits = model(input_ids=one["input_ids"], attention_mask=one["attention_mask"]).logits
            grads = torch.autograd.grad(per_sample_losses(logits, one["labels"]).mean.sum(), params)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        return torch.stack(rows)

    sparse = RandomProjector(dim, 8192, kind="sparse")
    kronecker = KroneckerProjector(model, 8192)
    dense = RandomProjector(dim, 512, kind="rademacher")
    fns = {
        "plain": plain,
        "loop": loop,
        "batched": lambda: gradient_features(model, batch),
        "batched+sparse8192": lambda: gradient_features(model, batch, projector=sparse),
        "batched+rademacher512": lambda: gradient_features(model, batch, projector=dense),
        "kronecker8192": lambda: kronecker.features(model, batch),
    }
    return fns, dim


def timing_worker(
    finetuning: str, batch_size: int, repeats: int, threads: int, methods: list[str]
) -> list[dict]:
    """All methods in one process, interleaved round by round, so load drift on a shared machine hits
    every method alike; the median over rounds is reported."""
    fns, dim = _setup(finetuning, batch_size, threads)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for m in methods:  # warm-up
        fns[m]()
    for _ in range(repeats):
        for m in methods:
            start = time.perf_counter()
            fns[m]()
            times[m].append(time.perf_counter() - start)
    return [
        {
            "finetuning": finetuning,
            "method": m,
            "trainable": dim,
            "batch": batch_size,
            "median_s": statistics.median(times[m]),
            "samples_per_s": batch_size / statistics.median(times[m]),
        }
        for m in methods
    ]


def memory_worker(finetuning: str, method: str, batch_size: int, threads: int) -> float:
    """Peak resident memory (MB) of one call above the level after loading model and data."""
    fns, _ = _setup(finetuning, batch_size, threads)
    base = _rss_kb("VmRSS")
    try:  # reset the high-water mark so the peak is this call's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    fns[method]()
    return max(_rss_kb("VmHWM") - base, 0) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (the machine is shared)")
    ap.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS)
    )
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        if args.worker[0] == "timing":
            print(
                json.dumps(
                    timing_worker(
                        args.worker[1], args.batch, args.repeats, args.threads, args.methods.split(",")
                    )
                )
            )
        else:
            print(json.dumps(memory_worker(args.worker[1], args.worker[2], args.batch, args.threads)))
        return
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}

    def sub(*worker: str) -> str:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            *worker,
            "--batch",
            str(args.batch),
            "--repeats",
            str(args.repeats),
            "--threads",
            str(args.threads),
            "--methods",
            args.methods,
        ]
        return (
            subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            .stdout.strip()
            .splitlines()[-1]
        )

    rows = []
    for ft in ("full", "lora"):
        ft_rows = json.loads(sub("timing", ft))
        for r in ft_rows:
            r["peak_extra_mb"] = json.loads(sub("memory", ft, r["method"]))
            print(
                f"{ft:5s} {r['method']:22s} {r['samples_per_s']:9.1f} samples/s {r['peak_extra_mb']:7.0f} MB",
                file=sys.stderr,
            )
        rows += ft_rows
    by = {(r["finetuning"], r["method"]): r for r in rows}
    print(
        f"| fine-tuning (trainable params) | method | median s / batch of {args.batch} | samples/s | "
        "vs loop | vs plain backward | peak extra MB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        loop, plain = by[(r["finetuning"], "loop")], by[(r["finetuning"], "plain")]
        print(
            f"| {r['finetuning']} ({r['trainable']:,}) | {r['method']} | {r['median_s']:.4f} | "
            f"{r['samples_per_s']:.1f} | {r['samples_per_s'] / loop['samples_per_s']:.2f}x | "
            f"{r['samples_per_s'] / plain['samples_per_s']:.2f}x | {r['peak_extra_mb']:.0f} |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
