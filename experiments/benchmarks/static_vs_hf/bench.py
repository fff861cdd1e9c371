"""DataFlex's static trainer vs a plain `transformers.Trainer` on the same model, data, batch and steps.

Both train the embedded tiny LLaMA (same init) on the embedded default data for the same number of steps
with the same batch size, optimizer settings and no eval/checkpointing; runs alternate (dataflex, hf,
dataflex, hf, ...) so machine noise hits both alike. Prints a markdown table with medians and the ratio.

    python experiments/benchmarks/static_vs_hf/bench.py --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

os.environ.setdefault("WANDB_MODE", "disabled")


def build(cutoff_len: int):
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData
    from dataflex.models.tiny import build_tiny_model

    bundle = build_tiny_model()
    engine = DataEngine(DataArguments(cutoff_len=cutoff_len))
    return bundle, TokenizedData(engine, bundle.tokenizer, cutoff_len)


def run_dataflex(steps: int, batch: int, lr: float, cutoff_len: int) -> float:
    from dataflex.tracking import TrackerGroup
    from dataflex.train.trainer.static import StaticTrainer

    bundle, data = build(cutoff_len)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = StaticTrainer(
            bundle=bundle,
            train_data=data,
            trackers=TrackerGroup([]),
            run_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=batch,
            learning_rate=lr,
            eval_on_start=False,
            eval_steps=0,
            save_final_model=False,
            disable_tqdm=True,
            logging_steps=steps,
            lr_scheduler_type="cosine",
        )
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


class _HFDataset(torch.utils.data.Dataset):
    def __init__(self, data) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.data[i]


def _hf_collate(pad_id: int):
    from dataflex.data.processor import collate

    def fn(features):
        b = collate(features, pad_id)
        return {k: b[k] for k in ("input_ids", "attention_mask", "labels")}

    return fn


def run_hf(steps: int, batch: int, lr: float, cutoff_len: int) -> float:
    from transformers import Trainer, TrainingArguments

    bundle, data = build(cutoff_len)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=batch,
            learning_rate=lr,
            lr_scheduler_type="cosine",
            logging_steps=steps,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
            seed=42,
        )
        trainer = Trainer(
            model=bundle.model,
            args=args,
            train_dataset=_HFDataset(data),
            data_collator=_hf_collate(bundle.tokenizer.pad_token_id),
        )
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--cutoff-len", type=int, default=128)
    a = p.parse_args()
    times: dict[str, list[float]] = {"dataflex": [], "hf": []}
    for r in range(a.repeats):
        for name, fn in (("dataflex", run_dataflex), ("hf", run_hf)):
            times[name].append(fn(a.steps, a.batch, a.lr, a.cutoff_len))
            print(f"repeat {r}: {name} {times[name][-1]:.2f}s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    samples = a.steps * a.batch
    print(
        f"\n{a.steps} steps x batch {a.batch}, {a.repeats} repeats, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("| trainer | median wall time (s) | samples/s | ratio vs HF |")
    print("|---|---|---|---|")
    for k in ("dataflex", "hf"):
        print(f"| {k} | {med[k]:.2f} | {samples / med[k]:.1f} | {med[k] / med['hf']:.3f} |")


if __name__ == "__main__":
    main()
