"""The physical limit of the loss selector's update on the peer's job: bare forwards of the whole pool.

usage: OMP_NUM_THREADS=1 python experiments/benchmarks/vs_dataflex/scoring_limit.py --peer /tmp/peer \
           [--repeats 3] [--out scoring_limit.json]

The same model as the benchmark's select_loss job (the peer's tiny Qwen2 with LoRA r8/alpha16 on all linear
layers, peft, unmerged) scores the same pool (arith, revstr, upper: 1200 rows, cutoff 128, prompt masked) in
`torch.inference_mode` and eval mode, with no framework around the forward. Timed, interleaved, medians of
`--repeats`:
- `peer_bs1`: the peer's batch-size-1 loop (one forward with full logits per sample, dataset order);
- `peer_bs8`: what the peer's job config runs (`score_batch_size: 8`, padded, dataset order, full logits);
- `bare_sorted_bs32` / `bare_all`: length-sorted batches of 32 rows / of 16384 padded tokens, full logits
  (the bare batched forward);
- `lean_sorted_bs32` / `lean_all`: the same batches, the decoder over every token but the LM head only on
  the supervised (answer) tokens, as our chunked loss path does;
- `merged_*`: the lean variants on a copy with the LoRA adapters merged into the weights (plain linears);
- `ours`: DataFlex's own scorer (`dataflex.train.selector.scoring.sample_losses`, what `component=loss`
  calls), automatic token budget.
Every variant's per-sample token-mean losses are checked against `peer_bs1` (max abs difference reported).
`peer_bs1 / the fastest bare/lean/merged variant` is the most any implementation of the update can gain
over the batch-size-1 loop on this CPU: the decoder FLOPs per real token are the same, batching only removes
per-call overhead (and the lean head the LM head's FLOPs on prompt tokens).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from dataflex.data.processor import IGNORE_INDEX, Features, SFTProcessor, collate  # noqa: E402


def load_pool(peer: Path, tokenizer, cutoff: int) -> list[Features]:
    proc = SFTProcessor(tokenizer, cutoff)
    pool: list[Features] = []
    for d, name in enumerate(("arith", "revstr", "upper")):
        for row in json.loads((peer / "data" / f"{name}.json").read_text()):
            prompt = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
            ids, labels = proc.encode(
                {
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": row["output"]},
                    ]
                }
            )
            pool.append(Features(input_ids=ids, labels=labels, domain=d, sample_id=len(pool)))
    return pool


def token_means(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    shift, target = logits[:, :-1].float(), labels[:, 1:]
    loss = F.cross_entropy(shift.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
    mask = target != IGNORE_INDEX
    return (loss * mask).sum(1) / mask.sum(1).clamp(min=1)


def bare(model, pool: list[Features], batches: list[np.ndarray], pad: int) -> torch.Tensor:
    out = torch.zeros(len(pool))
    with torch.inference_mode():
        for rows in batches:
            b = collate([pool[int(i)] for i in rows], pad)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            out[torch.as_tensor(rows)] = token_means(logits, b["labels"])
    return out


def lean(model, pool: list[Features], batches: list[np.ndarray], pad: int) -> torch.Tensor:
    """The decoder over every token, the LM head only on the supervised (answer) tokens."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = torch.zeros(len(pool))
    with torch.inference_mode():
        for rows in batches:
            b = collate([pool[int(i)] for i in rows], pad)
            hidden = inner.model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"]
            ).last_hidden_state
            target = b["labels"][:, 1:]
            mask = target != IGNORE_INDEX
            loss = F.cross_entropy(
                inner.lm_head(hidden[:, :-1][mask]).float(), target[mask], reduction="none"
            )
            sums = torch.zeros(len(rows)).index_add_(0, mask.nonzero()[:, 0], loss)
            out[torch.as_tensor(rows)] = sums / mask.sum(1).clamp(min=1)
    return out


def sorted_batches(
    pool: list[Features], rows: int | None = None, tokens: int | None = None
) -> list[np.ndarray]:
    from dataflex.train.signals.batching import length_batches

    return length_batches([len(f.input_ids) for f in pool], max_tokens=tokens or 10**9, max_rows=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", required=True, help="the peer's folder (tiny_model/, data/)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON of the timings (default: print only)")
    args = ap.parse_args()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dataflex.train.selector.scoring import sample_losses

    peer = Path(args.peer)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(peer / "tiny_model")
    model = AutoModelForCausalLM.from_pretrained(peer / "tiny_model", torch_dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, lora_dropout=0.0))
    for name, p in model.named_parameters():  # trained adapters, as at the selector's update (B != 0)
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    model.eval()
    pad = tokenizer.pad_token_id
    pool = load_pool(peer, tokenizer, 128)
    n = len(pool)
    order = np.arange(n)
    merged = copy.deepcopy(model).merge_and_unload()  # LoRA folded into the weights: plain linears
    merged.eval()
    variants = {
        "peer_bs1": lambda: bare(model, pool, [order[i : i + 1] for i in range(n)], pad),
        "peer_bs8": lambda: bare(model, pool, [order[i : i + 8] for i in range(0, n, 8)], pad),
        "bare_sorted_bs32": lambda: bare(model, pool, sorted_batches(pool, rows=32), pad),
        "bare_all": lambda: bare(model, pool, sorted_batches(pool, tokens=16384), pad),
        "lean_sorted_bs32": lambda: lean(model, pool, sorted_batches(pool, rows=32), pad),
        "lean_all": lambda: lean(model, pool, sorted_batches(pool, tokens=16384), pad),
        "merged_lean_bs32": lambda: lean(merged, pool, sorted_batches(pool, rows=32), pad),
        "merged_lean_all": lambda: lean(merged, pool, sorted_batches(pool, tokens=16384), pad),
        "ours": lambda: sample_losses(model, pool, order, batch_size=None, pad_token_id=pad, device="cpu"),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    values: dict[str, torch.Tensor] = {}
    variants["ours"]()  # warm-up: the loss path's one-time probe
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - start)
    ref = values["peer_bs1"]
    tokens = sum(len(f.input_ids) for f in pool)
    result = {
        "pool": n,
        "tokens": tokens,
        "threads": torch.get_num_threads(),
        "seconds": {k: statistics.median(v) for k, v in times.items()},
        "runs": times,
        "max_abs_diff_vs_bs1": {k: float((v.float() - ref).abs().max()) for k, v in values.items()},
    }
    best = min((v, k) for k, v in result["seconds"].items() if k != "ours" and not k.startswith("peer"))
    result["best_bare"] = best[1]
    result["limit_vs_bs1"] = result["seconds"]["peer_bs1"] / best[0]
    result["limit_vs_bs8"] = result["seconds"]["peer_bs8"] / best[0]
    result["ours_vs_bs1"] = result["seconds"]["peer_bs1"] / result["seconds"]["ours"]
    result["ours_vs_bs8"] = result["seconds"]["peer_bs8"] / result["seconds"]["ours"]
    print(f"pool {n} samples, {tokens} tokens, {torch.get_num_threads()} thread(s)")
    for k, v in result["seconds"].items():
        diff = result["max_abs_diff_vs_bs1"][k]
        print(f"{k:<18} {v:8.3f} s  (runs {[round(t, 2) for t in times[k]]}, max |diff| vs bs1 {diff:.1e})")
    print(
        f"limit: bs1/{best[1]} = {result['limit_vs_bs1']:.2f}x, bs8/it = {result['limit_vs_bs8']:.2f}x; "
        f"ours: bs1/ours = {result['ours_vs_bs1']:.2f}x, bs8/ours = {result['ours_vs_bs8']:.2f}x"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
