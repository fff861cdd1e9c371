"""Step-time overhead of trainer=dynamic_weight over trainer=static on the embedded default setup.

Every run trains the default tiny LLaMA (same init, seed and batches) on the embedded default data for the
same number of steps with the default batch (16 x 128 tokens); no periodic eval, no checkpoint. Runs
alternate (static, loss, adapt, static, loss, adapt, ...) so machine noise hits all alike. Two clocks:
wall ms/step (the loop's own training wall time / steps) and CPU ms/step (process CPU time of the whole
`train()` call / steps, less sensitive to other processes on a shared machine). A third column times the
trainer's own weighting work inside the step (`before_backward` + `on_step_end`: gathering the losses,
the weighter, the weight statistics). The tables give medians and the ratio of the medians to static. The
weighted runs use warmup_step=1: all but the first step are weighted.

    python experiments/benchmarks/weight_overhead/bench.py --steps 50 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("WANDB_MODE", "disabled")

METHODS = {
    "static": None,
    "dynamic_weight component=loss (linupper)": ("loss", {"strategy": "linupper"}),
    "dynamic_weight component=adapt": ("adapt", {"anchor_domains": ["target"], "refresh_interval": 50}),
}


def build(cutoff_len: int):
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData
    from dataflex.models.tiny import build_tiny_model

    bundle = build_tiny_model()
    args = DataArguments(cutoff_len=cutoff_len)
    train = TokenizedData(DataEngine(args), bundle.tokenizer, cutoff_len)
    evaluation = TokenizedData(DataEngine(args, split="eval"), bundle.tokenizer, cutoff_len)
    return bundle, train, evaluation


def timed_trainer_class():
    from dataflex.train.trainer.dynamic_weight import DynamicWeightTrainer

    class Timed(DynamicWeightTrainer):
        """Adds up the wall time of the trainer's own weighting hooks."""

        weighting_s = 0.0

        def before_backward(self, *args):
            start = time.perf_counter()
            super().before_backward(*args)
            self.weighting_s += time.perf_counter() - start

        def on_step_end(self, done, ctx):
            start = time.perf_counter()
            out = super().on_step_end(done, ctx)
            self.weighting_s += time.perf_counter() - start
            return out

    return Timed


def run(method: str, steps: int, batch: int, cutoff_len: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, weighting-hook seconds) per optimizer step of one run."""
    from omegaconf import OmegaConf

    from dataflex.config.store import SCHEMAS
    from dataflex.tracking import TrackerGroup
    from dataflex.train.trainer.static import StaticTrainer

    bundle, train, evaluation = build(cutoff_len)
    common = dict(
        max_steps=steps,
        per_device_train_batch_size=batch,
        eval_on_start=False,
        eval_steps=0,
        max_eval_samples_per_domain=1,
        save_final_model=False,
        disable_tqdm=True,
        logging_steps=steps,
    )
    with tempfile.TemporaryDirectory() as tmp:
        spec = METHODS[method]
        if spec is None:
            trainer = StaticTrainer(
                bundle=bundle,
                train_data=train,
                eval_data=evaluation,
                trackers=TrackerGroup([]),
                run_dir=tmp,
                **common,
            )
        else:
            name, params = spec
            component = OmegaConf.structured(SCHEMAS["component"][f"dynamic_weight_{name}"])
            for key, value in params.items():
                component[key] = value
            trainer = timed_trainer_class()(
                bundle=bundle,
                train_data=train,
                eval_data=evaluation,
                component=component,
                trackers=TrackerGroup([]),
                run_dir=tmp,
                warmup_step=1,
                **common,
            )
        cpu = time.process_time()
        summary = trainer.train()
        cpu = time.process_time() - cpu
    return summary["wall_time_s"] / steps, cpu / steps, getattr(trainer, "weighting_s", 0.0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cutoff-len", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: least sensitive to other load on a shared CPU)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    wall: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    hooks: dict[str, list[float]] = {m: [] for m in METHODS}
    run(next(iter(METHODS)), 3, args.batch, args.cutoff_len)  # warm caches/imports, not timed
    for r in range(args.repeats):
        for method in METHODS:
            w, c, h = run(method, args.steps, args.batch, args.cutoff_len)
            wall[method].append(w)
            cpu[method].append(c)
            hooks[method].append(h)
            print(
                f"repeat {r + 1}/{args.repeats} {method}: wall {w * 1000:.1f} ms/step, "
                f"cpu {c * 1000:.1f} ms/step, "
                f"weighting hooks {h * 1000:.2f} ms/step",
                flush=True,
            )
    print(
        f"\n{args.steps} steps x {args.repeats} alternating repeats, "
        f"batch {args.batch} x {args.cutoff_len} tokens, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    for clock, times in (("wall", wall), ("CPU", cpu)):
        base = statistics.median(times["static"])
        print(f"\n| trainer | median {clock} ms/step | min | max | ratio vs static (medians) |")
        print("|---|---|---|---|---|")
        for method, ts in times.items():
            med = statistics.median(ts)
            low, high = min(ts) * 1000, max(ts) * 1000
            print(f"| {method} | {med * 1000:.1f} | {low:.1f} | {high:.1f} | {med / base:.3f} |")
    print("\n| trainer | median weighting-hook ms/step | share of its median wall step |")
    print("|---|---|---|")
    for method in list(METHODS)[1:]:
        med = statistics.median(hooks[method])
        print(f"| {method} | {med * 1000:.2f} | {med / statistics.median(wall[method]):.1%} |")


if __name__ == "__main__":
    main()
