"""The physical limit of per-step selection at B = 2b: what each piece of a step costs, measured in one
process side by side (round-robin over the pieces, `--repeats` rounds, medians of the process CPU time).

Pieces, on the benchmark's model and data (embedded tiny LLaMA, full and LoRA rank 8; b = 16, B = 32; rows
drawn at random from the embedded training data, cutoff 128):

- `step_b`: a training step of b rows (forward + backward + AdamW): static training's whole step;
- `fwd_B` / `fwd_b`: a no-grad forward of B / b rows (eval mode): what max_loss / rho_loss add;
- `keep_graph`: the alternative for the loss selectors: a forward WITH grad of all B, then a backward of
  only the kept b rows' loss and the AdamW step (no second forward of b): compare with fwd_B + step_b;
- `ghost_pass`: grad_norm/greats' recorded forward + backward to the layer outputs over B (+ 4 validation
  rows for greats): the mandatory B-row backward;
- `gram` / `norms`: greats' ghost dot products (B x (B + 4)) / grad_norm's ghost norms (B);
- `assemble_b`: the kept rows' update from the ghost pass (batch_gradient) + the AdamW step.

Limits (ratio of steps/s against static on b):
    loss selectors:   step_b / (step_b + fwd_B)                     (the extra forward is irreducible)
    grad_norm:        step_b / (ghost_pass(B) + norms + assemble_b)
    greats:           step_b / (ghost_pass(B + 4) + gram + assemble_b)
    greats, no Gram:  step_b / (ghost_pass(B + 4) + assemble_b)    (only the mandatory B-row backward)

    OMP_NUM_THREADS=1 nice -n 10 python experiments/benchmarks/per_step/limit.py --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch


def _setup(kind: str, cutoff_len: int, b: int, B: int, seed: int):
    import numpy as np

    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData, collate
    from dataflex.models.tiny import build_tiny_model

    extra = {"finetuning_type": "lora", "lora_rank": 8} if kind == "lora" else {}
    bundle = build_tiny_model(**extra)
    train = TokenizedData(DataEngine(DataArguments(cutoff_len=cutoff_len)), bundle.tokenizer, cutoff_len)
    pad = bundle.tokenizer.pad_token_id
    rng = np.random.default_rng(seed)

    def draw(n: int) -> dict[str, torch.Tensor]:
        return collate([train[int(i)] for i in rng.choice(len(train), n, replace=False)], pad)

    return bundle.model, draw


def pieces(model, draw, b: int, B: int) -> dict[str, Callable[[], None]]:
    from dataflex.train.signals.ghost import ghost_gradients
    from dataflex.train.signals.losses import model_losses
    from dataflex.utils.modes import eval_mode

    cpu = torch.device("cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    batches = {"b": draw(b), "B": draw(B), "B+4": draw(B + 4)}

    def step_b() -> None:
        model.train()
        losses = model_losses(model, batches["b"], cpu)
        (losses.token_sum.sum() / losses.token_count.sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def fwd(key: str) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), eval_mode(model):
                model_losses(model, batches[key], cpu)

        return run

    def keep_graph() -> None:
        model.train()
        losses = model_losses(model, batches["B"], cpu)
        kept = torch.topk(losses.mean.detach(), b).indices
        (losses.token_sum[kept].sum() / losses.token_count[kept].sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    state: dict[str, object] = {}

    def ghost_pass(key: str) -> Callable[[], None]:
        def run() -> None:
            with eval_mode(model):
                state[key] = ghost_gradients(model, batches[key], device=cpu)

        return run

    ghost_pass("B")()
    ghost_pass("B+4")()

    def gram() -> None:
        state["B+4"].dots(torch.arange(B))  # type: ignore[attr-defined]

    def norms() -> None:
        state["B"].squared_norms()  # type: ignore[attr-defined]

    def assemble_b() -> None:
        ghost = state["B"]
        count = ghost.losses.token_count[:b].float()  # type: ignore[attr-defined]
        for p, g in ghost.batch_gradient(torch.arange(b), count / count.sum()):  # type: ignore[attr-defined]
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)

    return {
        "step_b": step_b,
        "fwd_b": fwd("b"),
        "fwd_B": fwd("B"),
        "keep_graph": keep_graph,
        "ghost_pass_B": ghost_pass("B"),
        "ghost_pass_B+4": ghost_pass("B+4"),
        "norms": norms,
        "gram": gram,
        "assemble_b": assemble_b,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cutoff-len", type=int, default=128)
    parser.add_argument("--kinds", default="full,lora")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    b, B = args.batch, 2 * args.batch
    out: dict[str, dict[str, float]] = {}
    for kind in args.kinds.split(","):
        model, draw = _setup(kind, args.cutoff_len, b, B, seed=0)
        fns = pieces(model, draw, b, B)
        for fn in fns.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                start = time.process_time()
                fn()
                times[name].append(time.process_time() - start)
        med = {k: 1000 * statistics.median(v) for k, v in times.items()}
        step = med["step_b"]
        limits = {
            "loss selectors": step / (step + med["fwd_B"]),
            "loss selectors, keep_graph": step / med["keep_graph"] if med["keep_graph"] else float("nan"),
            "grad_norm": step / (med["ghost_pass_B"] + med["norms"] + med["assemble_b"]),
            "greats": step / (med["ghost_pass_B+4"] + med["gram"] + med["assemble_b"]),
            "greats without the Gram": step / (med["ghost_pass_B+4"] + med["assemble_b"]),
        }
        out[kind] = {**{f"ms/{k}": v for k, v in med.items()}, **{f"limit/{k}": v for k, v in limits.items()}}
        print(f"\n{kind} (b = {b}, B = {B}; CPU ms, median of {args.repeats})\n")
        print("| piece | " + " | ".join(med) + " |")
        print("|---|" + "---|" * len(med))
        print("| CPU ms | " + " | ".join(f"{v:.1f}" for v in med.values()) + " |")
        print("\n| best achievable ratio vs static | " + " | ".join(limits) + " |")
        print("|---|" + "---|" * len(limits))
        print("| x | " + " | ".join(f"{v:.2f}x" for v in limits.values()) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
