"""Step-time overhead of `trainer=dynamic_mix` over `trainer=static` on the same model, data, batch and steps.

Variants (all on the embedded tiny LLaMA, default data, per-device batch 16, no eval, no checkpoints):
- `static`:      trainer=static (epoch-shuffled batches, plain loss): the baseline;
- `mix_none`:    trainer=dynamic_mix static_mix=true (ProportionSampler, per-domain stats, no mixer);
- `odm`:         trainer=dynamic_mix component=odm updated every step (warmup 0, update_step 1): the worst
                 case;
- `doremi`:      DoReMi step 2 (update every step): deferred backward + the reference model's forward.

Every run builds a fresh model and a fresh tokenized view (so each pays the same lazy tokenization); runs
alternate (the order rotates every repeat) so machine noise hits every variant alike. The time of a run
is the loop's own wall time (steps only, no setup) / steps. Reports medians over repeats, the median of
the per-repeat ratios to `static` (paired, robust to drift), and the time spent inside the strategy's
hooks (next_indices, compute_loss, before_backward, on_step_end): the overhead itself, measured directly,
which machine noise barely touches.

    OMP_NUM_THREADS=1 python experiments/benchmarks/mix_overhead/bench.py --steps 40 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

VARIANTS = ("static", "mix_none", "odm", "doremi")


def run_once(kind: str, steps: int, batch: int, reference: str, engine) -> float:
    from omegaconf import OmegaConf

    from dataflex.data.processor import TokenizedData
    from dataflex.models.tiny import build_tiny_model
    from dataflex.tracking import TrackerGroup
    from dataflex.train.trainer.dynamic_mix import DynamicMixTrainer
    from dataflex.train.trainer.static import StaticTrainer

    bundle = build_tiny_model()
    data = TokenizedData(engine, bundle.tokenizer, 128)
    common = dict(
        per_device_train_batch_size=batch,
        eval_on_start=False,
        eval_steps=0,
        save_final_model=False,
        disable_tqdm=True,
        logging_steps=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(bundle=bundle, train_data=data, trackers=TrackerGroup([]), run_dir=tmp)
        if kind == "static":
            trainer = StaticTrainer(**kw, max_steps=steps, **common)
        elif kind == "mix_none":
            trainer = DynamicMixTrainer(**kw, static_mix=True, train_step=steps, **common)
        else:
            component = {
                "odm": {"_target_": "dataflex.train.mixer.odm.OdmMixer"},
                "doremi": {
                    "_target_": "dataflex.train.mixer.doremi.DoReMiMixer",
                    "reference_model_path": reference,
                },
            }[kind]
            trainer = DynamicMixTrainer(
                **kw,
                component=OmegaConf.create(component),
                warmup_step=0,
                update_step=1,
                update_times=steps,
                **common,
            )
        hook_time = instrument(trainer)
        summary = trainer.train()
    return summary["wall_time_s"] / steps, hook_time[0] / steps


def instrument(trainer) -> list[float]:
    """Times the strategy's own hooks (what dynamic_mix adds to the loop: sampling, per-domain stats, the
    mixer, DoReMi's reference forward and weighted loss); returns a one-element accumulator in seconds."""
    import time

    acc = [0.0]
    for name in ("next_indices", "compute_loss", "before_backward", "on_step_end"):
        original = getattr(trainer, name)

        def timed(*a, _f=original, **k):
            start = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                acc[0] += time.perf_counter() - start

        setattr(trainer, name, timed)
    return acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", type=Path, default=None, help="also write the raw times here (json)")
    args = p.parse_args()

    import torch

    from dataflex.data import DataArguments, DataEngine
    from dataflex.models.tiny import build_tiny_model

    engine = DataEngine(DataArguments(cutoff_len=128))
    with tempfile.TemporaryDirectory() as ref_dir:
        reference = build_tiny_model(seed=1)
        reference.model.save_pretrained(ref_dir)
        times: dict[str, list[float]] = {k: [] for k in VARIANTS}
        hooks: dict[str, list[float]] = {k: [] for k in VARIANTS}
        for r in range(args.repeats):
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            for kind in order:
                step, hook = run_once(kind, args.steps, args.batch, ref_dir, engine)
                times[kind].append(step)
                hooks[kind].append(hook)
            print(
                f"repeat {r + 1}/{args.repeats}: "
                + ", ".join(f"{k}={times[k][-1] * 1000:.1f}ms" for k in VARIANTS),
                flush=True,
            )

    base = statistics.median(times["static"])
    print(
        f"\n{args.steps} steps x {args.repeats} repeats, per-device batch {args.batch}, "
        f"torch threads {torch.get_num_threads()}\n"
    )
    print(
        "| variant | median step time (ms) | ratio of medians vs static | median paired ratio | "
        "strategy hooks per step (ms) |"
    )
    print("|---|---:|---:|---:|---:|")
    for kind in VARIANTS:
        med = statistics.median(times[kind])
        paired = statistics.median(a / b for a, b in zip(times[kind], times["static"]))
        print(
            f"| {kind} | {med * 1000:.1f} | {med / base:.3f} | {paired:.3f} | "
            f"{statistics.median(hooks[kind]) * 1000:.2f} |"
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "steps": args.steps,
                    "repeats": args.repeats,
                    "batch": args.batch,
                    "times_s": times,
                    "hook_times_s": hooks,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
