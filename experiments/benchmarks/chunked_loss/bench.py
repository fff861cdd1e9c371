"""Peak activation memory and step time of one training step (forward + backward of the per-sample losses),
plain full-logit loss vs the chunked LM-head loss, on a LLaMA built from config with a 128k vocabulary.

Every measurement runs in a fresh subprocess (so one case's allocations cannot hide another's); cases are
interleaved (plain, chunked, plain, ...) so machine noise hits both. Peak activation memory = RSS high-water
mark of the step (ru_maxrss) minus the RSS before the first step, when the model, its gradients and the
batch already exist (tracemalloc does not see torch's allocations).

    OMP_NUM_THREADS=1 python experiments/benchmarks/chunked_loss/bench.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASE_ENV = "DATAFLEX_CHUNKED_LOSS_CASE"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(spec: dict) -> dict:
    import resource

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from dataflex.data.processor import IGNORE_INDEX
    from dataflex.train.signals.losses import LossSettings, auto_chunk_size, model_losses

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=spec["vocab"],
        hidden_size=spec["hidden"],
        intermediate_size=spec["hidden"] * 3,
        num_hidden_layers=spec["layers"],
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=spec["seq"],
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).train()
    if spec.get("head") == "frozen":  # as under LoRA: the LM head takes no gradient
        model.lm_head.weight.requires_grad_(False)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, spec["vocab"], (spec["batch"], spec["seq"]), generator=gen)
    labels = ids.clone()
    labels[:, : int(spec["seq"] * spec["prompt_share"])] = IGNORE_INDEX
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    settings = LossSettings(spec["impl"], spec["chunk"] or None)
    model_losses(model, {k: v[:1, :8] for k, v in batch.items()}, "cpu", settings)  # resolve the path (probe)
    base = rss_bytes()
    times, cpu_times = [], []
    for _ in range(spec["steps"] + 1):
        start, cpu = time.perf_counter(), time.process_time()
        losses = model_losses(model, batch, "cpu", settings)
        losses.mean.mean().backward()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)  # (OMP_NUM_THREADS=1: ~ the step's work, not the load)
        del losses
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak_activation_mib": (peak - base) / 2**20,
        "step_s": statistics.median(times[1:]),
        "step_cpu_s": statistics.median(cpu_times[1:]),
        "chunk_used": spec["chunk"] or auto_chunk_size(spec["vocab"]),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def chunk_label(row: dict) -> str:
    if row["impl"] == "plain":
        return "-"
    return f"{row['chunk_used']}" + (" (default)" if not row["chunk"] else "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument(
        "--chunk",
        type=int,
        nargs="+",
        default=[0, 1024],
        help="tokens per chunk of the chunked loss; 0: the default (sized from the vocabulary)",
    )
    parser.add_argument(
        "--prompt-share",
        type=float,
        nargs="+",
        default=[0.0, 0.5],
        help="share of each row masked as prompt (0: every token supervised, as pretraining)",
    )
    parser.add_argument(
        "--heads",
        nargs="+",
        default=["trainable"],
        choices=["trainable", "frozen"],
        help="trainable LM head (full fine-tuning, pretraining) and/or a frozen one (as under LoRA)",
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if os.environ.get(CASE_ENV):
        print(json.dumps(run_case(json.loads(os.environ[CASE_ENV]))))
        return
    base = dict(
        vocab=args.vocab,
        hidden=args.hidden,
        layers=args.layers,
        batch=args.batch,
        seq=args.seq,
        steps=args.steps,
    )
    cases = []
    for head in args.heads:
        for share in args.prompt_share:
            cases.append(dict(base, impl="plain", chunk=0, prompt_share=share, head=head))
            cases += [dict(base, impl="chunked", chunk=c, prompt_share=share, head=head) for c in args.chunk]
    results: dict[int, list[dict]] = {i: [] for i in range(len(cases))}
    for _ in range(args.repeats):
        for i, case in enumerate(cases):  # interleaved
            env = {
                **os.environ,
                CASE_ENV: json.dumps(case),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            }
            out = subprocess.run(
                [sys.executable, __file__], env=env, capture_output=True, text=True, check=True
            )
            results[i].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for i, case in enumerate(cases):
        mem = statistics.median(r["peak_activation_mib"] for r in results[i])
        step = statistics.median(r["step_s"] for r in results[i])
        step_cpu = statistics.median(r["step_cpu_s"] for r in results[i])
        rows.append(
            {
                **case,
                "peak_activation_mib": mem,
                "step_s": step,
                "step_cpu_s": step_cpu,
                "params_m": results[i][0]["params_m"],
                "chunk_used": results[i][0]["chunk_used"],
            }
        )
    print(
        f"model: LLaMA vocab {args.vocab}, hidden {args.hidden}, {args.layers} layers "
        f"({rows[0]['params_m']:.1f}M params), batch {args.batch} x {args.seq} tokens, float32, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, medians of {args.repeats} fresh processes\n"
    )
    print(
        "| LM head | prompt masked | loss | chunk | peak activation MiB | vs plain | step s (wall / CPU) "
        "| speed vs plain (wall / CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|")  # (one row per case, medians)
    for row in rows:
        plain = next(
            r
            for r in rows
            if r["impl"] == "plain" and (r["prompt_share"], r["head"]) == (row["prompt_share"], row["head"])
        )
        print(
            f"| {row['head']} | {row['prompt_share']:.0%} | {row['impl']} | {chunk_label(row)} | "
            f"{row['peak_activation_mib']:.0f} | "
            f"{row['peak_activation_mib'] / plain['peak_activation_mib']:.2f}x | "
            f"{row['step_s']:.2f} / {row['step_cpu_s']:.2f} | {plain['step_s'] / row['step_s']:.2f}x / "
            f"{plain['step_cpu_s'] / row['step_cpu_s']:.2f}x |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
