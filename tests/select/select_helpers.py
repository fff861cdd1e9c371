"""Helpers for the dynamic_select tests: a tiny model + data, a reference batch-size-1 gradient loop."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from dataflex.data import DataArguments, DataEngine
from dataflex.data.processor import TokenizedData, collate
from dataflex.models.tiny import build_tiny_model
from dataflex.train.selector.base_selector import SelectionContext
from dataflex.train.signals.gradients import trainable_parameters
from dataflex.train.signals.losses import per_sample_losses

TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2
)


@dataclass
class TinySetup:
    model: torch.nn.Module
    tokenizer: object
    train: TokenizedData
    eval: TokenizedData

    @property
    def pad(self) -> int:
        return self.tokenizer.pad_token_id

    def context(self, **kw) -> SelectionContext:
        base = dict(
            train_data=self.train,
            eval_data=self.eval,
            pad_token_id=self.pad,
            tokenizer=self.tokenizer,
            seed=7,
            batch_size=8,
            eval_batch_size=32,
        )
        base.update(kw)
        return SelectionContext(**base)

    def batch(self, ids):
        return collate([self.train[int(i)] for i in ids], self.pad)


def make_setup(finetuning_type: str, seed: int = 0) -> TinySetup:
    bundle = build_tiny_model(finetuning_type=finetuning_type, lora_rank=4, seed=seed, **TINY)
    model = bundle.model
    if finetuning_type == "lora":  # LoRA B starts at zero: make the adapters' gradients non-trivial
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    args = DataArguments(max_samples=20)
    train = TokenizedData(DataEngine(args), bundle.tokenizer, cutoff_len=128)
    evals = TokenizedData(DataEngine(args, split="eval"), bundle.tokenizer, cutoff_len=128)
    return TinySetup(model.eval(), bundle.tokenizer, train, evals)


def loop_gradients(model, data, ids, pad: int, *, reduction: str = "mean", weights=None) -> torch.Tensor:
    """Reference: one autograd backward per sample (batch size 1), flattened in parameter order."""
    params = [p for _, p in trainable_parameters(model)]
    rows = []
    for k, i in enumerate(ids):
        one = collate([data[int(i)]], pad)
        logits = model(input_ids=one["input_ids"], attention_mask=one["attention_mask"]).logits
        losses = per_sample_losses(logits, one["labels"])
        loss = (losses.mean if reduction == "mean" else losses.token_sum).sum()
        if weights is not None:
            loss = loss * float(weights[k])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(
            torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])
        )
    return torch.stack(rows)


def step_adamw(model, data, ids, pad: int, steps: int = 3, lr: float = 1e-2) -> torch.optim.Optimizer:
    """A few real AdamW steps so the optimizer holds non-trivial moments (LESS preconditioning)."""
    params = [p for _, p in trainable_parameters(model)]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    for s in range(steps):
        batch = collate([data[int(i)] for i in np.roll(ids, s)[:8]], pad)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_sample_losses(logits, batch["labels"]).mean.mean().backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return opt


@cache
def shared_setup(finetuning_type: str) -> TinySetup:
    """One setup per kind for tests that do not change the model (build with `make_setup` otherwise)."""
    return make_setup(finetuning_type)
