"""Small builders for the dynamic_weight tests: a 1-layer tiny LLaMA on a few rows of the embedded data, and
a trainer subclass that records what each optimizer step applied (gradients, weights)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from omegaconf import OmegaConf

os.environ.setdefault("WANDB_MODE", "disabled")

TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2
)


def tiny_bundle(seed: int = 0):
    from dataflex.models.tiny import build_tiny_model

    return build_tiny_model(seed=seed, **TINY)


def tiny_data(tokenizer, max_samples: int = 16, cutoff_len: int = 48):
    """(train, eval) TokenizedData over the 5 embedded domains, `max_samples` rows each."""
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData

    args = DataArguments(max_samples=max_samples, cutoff_len=cutoff_len)
    train = TokenizedData(DataEngine(args), tokenizer, cutoff_len)
    evaluation = TokenizedData(DataEngine(args, split="eval"), tokenizer, cutoff_len)
    return train, evaluation


def component(schema: type, **params: Any):
    """The composed `component` node as Hydra would build it (typed by its schema)."""
    cfg = OmegaConf.structured(schema)
    for key, value in params.items():
        cfg[key] = value
    return cfg


def recording_trainer_class():
    from dataflex.train.trainer.dynamic_weight import DynamicWeightTrainer

    class RecordingTrainer(DynamicWeightTrainer):
        """Records, per optimizer step, the flat gradient the optimizer is about to apply and the weights."""

        def setup(self, loop) -> None:
            super().setup(loop)
            self.grads: list[torch.Tensor] = []
            self.weights: list[torch.Tensor | None] = []
            self.metrics: list[dict[str, Any]] = []
            self.loss_pairs: list[tuple[int, float, float]] = []
            self.token_counts: list[torch.Tensor] = []
            params = [p for p in loop.model.parameters() if p.requires_grad]

            def record(optimizer, args, kwargs) -> None:
                self.grads.append(torch.cat([p.grad.detach().flatten().clone() for p in params]))

            loop.optimizer.optimizer.register_step_pre_hook(record)

        def compute_loss(self, losses, batch, ctx):
            loss = super().compute_loss(losses, batch, ctx)
            plain = losses.mean.sum() * ctx.world_size / ctx.global_samples
            self.loss_pairs.append((ctx.step, float(loss.detach()), float(plain.detach())))
            return loss

        def on_step_end(self, done, ctx):
            metrics = super().on_step_end(done, ctx)
            self.weights.append(
                self._last["weights"].clone() if self._last and self._last["step"] == done - 1 else None
            )
            self.metrics.append(metrics)
            self.token_counts.append(ctx.gathered()["token_count"])
            return metrics

    return RecordingTrainer


def train_tiny(
    comp,
    *,
    steps: int = 3,
    warmup_step: int = 1,
    per_device: int = 8,
    accumulation: int = 1,
    max_samples: int = 16,
    trainer_cls=None,
    run_dir: str | None = None,
    **args: Any,
):
    """Trains the tiny model with `comp` as the weighter; returns the trainer (with `.grads`, `.weights`)."""
    from dataflex.tracking import TrackerGroup

    bundle = tiny_bundle()
    train, evaluation = tiny_data(bundle.tokenizer, max_samples=max_samples)
    cls = trainer_cls or recording_trainer_class()
    kwargs = dict(
        max_steps=steps,
        warmup_step=warmup_step,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        learning_rate=1e-2,
        max_grad_norm=0.0,
        eval_on_start=False,
        eval_steps=0,
        save_final_model=False,
        disable_tqdm=True,
        logging_steps=2,
        lr_scheduler_type="constant",
        seed=7,
    )
    kwargs.update(args)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = cls(
            bundle=bundle,
            train_data=train,
            eval_data=evaluation,
            component=comp,
            trackers=TrackerGroup([]),
            run_dir=run_dir or tmp,
            **kwargs,
        )
        trainer.summary = trainer.train()
    return trainer


def schema(name: str) -> type:
    from dataflex.config.store import SCHEMAS

    return SCHEMAS["component"][f"dynamic_weight_{name}"]


def distributed_train(
    specs: list[tuple[str, dict]], steps: int, warmup_step: int, per_device: int
) -> list[dict]:
    """Run inside each rank by `run_distributed`: trains one tiny run per (weighter name, params) and
    returns what every optimizer step applied."""
    out = []
    for name, params in specs:
        trainer = train_tiny(
            component(schema(name), **params), steps=steps, warmup_step=warmup_step, per_device=per_device
        )
        out.append(
            {
                "grads": trainer.grads,
                "weights": trainer.weights,
                "world_size": trainer.ctx.world_size,
                "rank": trainer.ctx.rank,
            }
        )
    return out
