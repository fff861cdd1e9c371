"""Shared by the per-step trainer tests (importable by spawned gloo workers as `perstep.perstep_helpers`)."""

from __future__ import annotations

from typing import Any

import torch

from dataflex.data import DataArguments, DataEngine
from dataflex.data.processor import TokenizedData
from dataflex.models.tiny import build_tiny_model
from dataflex.tracking import TrackerGroup
from dataflex.train.perstep.rules import Choice, uniform_choice
from dataflex.train.perstep.selectors import Candidates, PerStepSelector
from dataflex.train.perstep.trainer import PerStepTrainer

TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2
)


class RankBiased(PerStepSelector):
    """A selector whose choice depends on the rank it runs on: only the trainer's broadcast can make the
    ranks train one decision."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.rank = dist.get_rank() if dist.is_initialized() else 0

    def choose(self, model: Any, candidates: Candidates, b: int) -> Choice:
        return uniform_choice(candidates.size, b, seed=100 + self.rank, step=candidates.step)


class Recording(PerStepTrainer):
    """Keeps, per step, the global batch the loop trained (ctx.indices) next to what the trainer chose."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.trained: dict[int, list[int]] = {}
        self.kept: dict[int, list[int]] = {}

    def on_step_end(self, done: int, ctx: Any) -> dict[str, Any]:
        self.trained[ctx.step] = [int(i) for i in ctx.indices]
        self.kept[ctx.step] = [int(i) for i in self.chosen[ctx.step]]
        return super().on_step_end(done, ctx)


def build_trainer(
    run_dir: str, selector: PerStepSelector | None, *, kind: str = "lora", **args: Any
) -> Recording:
    bundle = build_tiny_model(finetuning_type=kind, lora_rank=4, seed=0, **TINY)
    data = DataArguments(max_samples=40)
    train = TokenizedData(DataEngine(data), bundle.tokenizer, cutoff_len=64)
    evaluation = TokenizedData(DataEngine(data, split="eval"), bundle.tokenizer, cutoff_len=64)
    common: dict[str, Any] = dict(
        max_steps=4,
        per_device_train_batch_size=4,
        candidate_batch_size=8,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        eval_on_start=False,
        eval_steps=0,
        save_final_model=False,
        disable_tqdm=True,
        logging_steps=1,
        seed=3,
    )
    common.update(args)
    return Recording(
        bundle=bundle,
        train_data=train,
        eval_data=evaluation,
        selector=selector,
        trackers=TrackerGroup([]),
        run_dir=run_dir,
        **common,
    )


def weights(trainer: PerStepTrainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def train_on_rank(run_dir: str, selector_name: str) -> dict[str, Any]:
    """One rank of a 2-process run (global batch 2 x 2 = 4 of 8 candidates)."""
    from dataflex.train.perstep.selectors import MaxLossPerStep

    selector = RankBiased() if selector_name == "biased" else MaxLossPerStep()
    trainer = build_trainer(run_dir, selector, per_device_train_batch_size=2, max_steps=3)
    trainer.train()
    return {
        "trained": trainer.trained,
        "kept": trainer.kept,
        "weights": {k: v.numpy() for k, v in weights(trainer).items()},
    }
