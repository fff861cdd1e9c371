r"""Forward-only loss scoring (what the loss/delta_loss selectors run per update): fixed batches of 64 in
candidate order with the full-logit loss (before) vs length-bucketed token-budget batches with the chunked
loss (now), on the embedded model and data; medians of interleaved repeats in one process.

    OMP_NUM_THREADS=1 python experiments/benchmarks/chunked_loss/bench_scoring.py \
        --candidates 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--vocab", type=int, default=None, help="pad the tiny model's vocabulary (model.vocab_size)"
    )
    args = parser.parse_args()
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData
    from dataflex.models.tiny import build_tiny_model
    from dataflex.train.selector.scoring import sample_losses
    from dataflex.train.signals.losses import LossSettings, configure_losses
    from dataflex.utils.progress import configure_progress

    configure_progress(False)
    bundle = build_tiny_model(vocab_size=args.vocab)
    data = TokenizedData(DataEngine(DataArguments(cutoff_len=128)), bundle.tokenizer, 128)
    ids = np.random.default_rng(0).permutation(len(data))[: args.candidates]
    pad = bundle.tokenizer.pad_token_id
    for i in ids:  # tokenize once, outside the timings
        data[int(i)]

    def before():
        configure_losses(LossSettings("plain"))
        return sample_losses(
            bundle.model, data, ids, batch_size=64, pad_token_id=pad, device="cpu", lockstep=True
        )

    def now():
        configure_losses(LossSettings("auto"))
        return sample_losses(bundle.model, data, ids, batch_size=None, pad_token_id=pad, device="cpu")

    times: dict[str, list[float]] = {"before": [], "now": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("before", before), ("now", now)):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    assert torch.allclose(results["before"], results["now"], rtol=1e-4, atol=1e-5)
    lengths = [len(data[int(i)].input_ids) for i in ids]
    print(
        f"{args.candidates} candidates of the embedded data (length {min(lengths)}-{max(lengths)}, "
        f"median {int(np.median(lengths))}), tiny LLaMA vocab {bundle.model.config.vocab_size}, "
        f"medians of {args.repeats}\n"
    )
    print("| scoring | seconds | candidates/s | speed-up |")
    print("|---|---|---|---|")
    base = statistics.median(times["before"])
    for name, label in (
        ("before", "batches of 64 in candidate order, full-logit loss"),
        ("now", "length buckets, token budget, chunked loss, inference_mode"),
    ):
        t = statistics.median(times[name])
        print(f"| {label} | {t:.2f} | {args.candidates / t:.0f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
