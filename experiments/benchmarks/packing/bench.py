r"""Training tokens/s with `data.packing=true` vs padded micro-batches, side by side.

usage: OMP_NUM_THREADS=1 python experiments/benchmarks/packing/bench.py \
           --repeats 5 --steps 20 --out results.json

Cases (each: the same samples, the same steps, the same model init; only the layout differs):
- `embedded`: the embedded 5-domain data (20-37 tokens a sample), cutoff 128;
- `long_tail`: a generated alpaca file whose answers have log-normal lengths (most samples short, a few near
  the cutoff), cutoff 512 -- the case where padding to the longest sample of a micro-batch wastes most work.
Models: `tiny` (the embedded 1.9M-parameter LLaMA) and `wide` (LLaMA, hidden 512, 4 layers, 8 heads: 20M
parameters, closer to a real model's width). Micro-batch 16, full fine-tuning, AdamW.
tokens/s = real (non-padding) tokens trained / training-loop wall time, so both layouts count the same tokens.
The data is tokenized before the clock starts. Padded and packed runs alternate, the order flipping each
repeat.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

MODELS = {
    "tiny": {},
    "wide": dict(
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=1024,
    ),
}


def long_tail_file(folder: Path, rows: int = 800, seed: int = 0) -> Path:
    """Alpaca rows whose answer lengths are log-normal (median ~20 words, a long tail to ~400)."""
    rng = random.Random(seed)
    words = (
        "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma"
    ).split()
    path = folder / "long_tail.jsonl"
    with path.open("w") as f:
        for i in range(rows):
            n = min(400, max(3, int(rng.lognormvariate(3.0, 1.0))))
            answer = " ".join(rng.choice(words) for _ in range(n))
            f.write(
                json.dumps({"instruction": f"Write {n} words (row {i}).", "input": "", "output": answer})
                + "\n"
            )
    return path


def build_data(case: str, tokenizer, folder: Path):
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData

    if case == "embedded":
        args, cutoff = DataArguments(max_samples=200, cutoff_len=128), 128
    else:
        args, cutoff = DataArguments(dataset=str(long_tail_file(folder)), cutoff_len=512), 512
    data = TokenizedData(DataEngine(args), tokenizer, cutoff)
    lengths = [len(data[i].input_ids) for i in range(len(data))]  # tokenizes (and caches) every sample
    return data, cutoff, lengths


def train_once(
    model_name: str, data, cutoff: int, packed: bool, steps: int, batch: int, run_dir: Path
) -> dict:
    from dataflex.models.tiny import build_tiny_model
    from dataflex.tracking import TrackerGroup
    from dataflex.train.trainer.static import StaticTrainer

    bundle = build_tiny_model(**MODELS[model_name])
    trainer = StaticTrainer(
        bundle=bundle,
        train_data=data,
        trackers=TrackerGroup([]),
        run_dir=str(run_dir),
        max_steps=steps,
        per_device_train_batch_size=batch,
        disable_tqdm=True,
        eval_on_start=False,
        eval_steps=0,
        save_final_model=False,
        logging_steps=0,
        overwrite_output_dir=True,
        seed=0,
    )
    trainer.pack_capacity = cutoff if packed else None
    summary = trainer.train()
    return {"tokens_per_s": summary["train_tokens_per_s"], "wall_s": summary["wall_time_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cases", default="embedded,long_tail")
    ap.add_argument("--models", default="tiny,wide")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from dataflex.data.packing import best_plan
    from dataflex.models.tiny import load_tokenizer

    tokenizer = load_tokenizer()
    results = {
        "command": "python experiments/benchmarks/packing/bench.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None and k != "out"),
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in args.cases.split(","):
            data, cutoff, lengths = build_data(case, tokenizer, tmp)
            # the layout cost, independent of timing: token slots per micro-batch, padded vs packed
            # (first steps)
            rng = random.Random(0)
            order = list(range(len(lengths)))
            rng.shuffle(order)
            padded_slots = packed_slots = real = 0
            for s in range(0, len(order) - args.batch + 1, args.batch):
                ls = [lengths[i] for i in order[s : s + args.batch]]
                rows = best_plan(ls, cutoff)
                padded_slots += len(ls) * max(ls)
                packed_slots += len(rows) * max(sum(ls[i] for i in r) for r in rows)
                real += sum(ls)
            layout = {
                "mean_len": statistics.mean(lengths),
                "max_len": max(lengths),
                "padding_fraction_padded": 1 - real / padded_slots,
                "padding_fraction_packed": 1 - real / packed_slots,
                "slots_ratio_padded_over_packed": padded_slots / packed_slots,
            }
            print(case, json.dumps({k: round(v, 3) for k, v in layout.items()}), flush=True)
            for model in args.models.split(","):
                runs = {"padded": [], "packed": []}
                for rep in range(args.repeats):
                    for layout_name in ("padded", "packed") if rep % 2 == 0 else ("packed", "padded"):
                        r = train_once(
                            model,
                            data,
                            cutoff,
                            layout_name == "packed",
                            args.steps,
                            args.batch,
                            tmp / f"{case}_{model}_{layout_name}_{rep}",
                        )
                        runs[layout_name].append(r)
                        print(
                            f"  {case} {model} rep {rep} {layout_name}: {r['tokens_per_s']:.0f} tokens/s",
                            flush=True,
                        )
                med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
                paired = statistics.median(
                    b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(runs["padded"], runs["packed"])
                )
                results["cases"][f"{case}/{model}"] = {
                    "layout": layout,
                    "runs": runs,
                    "median_tokens_per_s": med,
                    "ratio_of_medians": med["packed"] / med["padded"],
                    "median_paired_ratio": paired,
                }
    print(
        "| case | model | mean / max tokens | padding (padded) | padding (packed) | padded tokens/s | "
        "packed tokens/s | packed / padded (medians) | median paired ratio |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, r in results["cases"].items():
        case, model = key.split("/")
        lay, med = r["layout"], r["median_tokens_per_s"]
        print(
            f"| {case} | {model} | {lay['mean_len']:.0f} / {lay['max_len']} | "
            f"{lay['padding_fraction_padded']:.0%} | "
            f"{lay['padding_fraction_packed']:.0%} | {med['padded']:.0f} | {med['packed']:.0f} | "
            f"{r['ratio_of_medians']:.2f} | {r['median_paired_ratio']:.2f} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
