"""The optimizer (`trainer.optim`; no weight decay on biases and norms) and an HF learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two groups: with weight decay, and without (biases, norms), as HF Trainer."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    if not decay and not no_decay:
        raise ValueError("No trainable parameters: check model.finetuning_type and its options.")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def optimizer_class(optim: str) -> type[torch.optim.Optimizer]:
    """The class behind a `trainer.optim` name or class path."""
    if optim in ("adamw_torch", "adamw_torch_fused"):
        return torch.optim.AdamW
    if optim == "sgd":
        return torch.optim.SGD
    if optim == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor
    from hydra.utils import get_class

    return get_class(optim)


def optimizer_class_and_kwargs(args) -> tuple[type[torch.optim.Optimizer], dict]:
    """`trainer.optim` → (class, keyword arguments) the way HF Trainer maps its names."""
    adam = {"betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon}
    kwargs = {
        "adamw_torch": adam,
        "adamw_torch_fused": {**adam, "fused": True},
        # HF Trainer's `adafactor`: the learning rate is ours (no relative step, no parameter scaling).
        "adafactor": {"scale_parameter": False, "relative_step": False},
    }.get(args.optim, {})
    return optimizer_class(args.optim), kwargs


def build_optimizer(model: torch.nn.Module, args) -> torch.optim.Optimizer:
    cls, kwargs = optimizer_class_and_kwargs(args)
    make: Callable[..., torch.optim.Optimizer] = cls  # (subclasses take `lr`; `Optimizer` itself does not)
    return make(
        parameter_groups(model, args.weight_decay), lr=args.learning_rate, **{**kwargs, **args.optim_args}
    )


def warmup_steps(args, total_steps: int) -> int:
    """`warmup_steps` if set, else `warmup_ratio` of the total (rounded up, as HF)."""
    return args.warmup_steps or math.ceil(args.warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, args, total_steps: int):
    from transformers import get_scheduler

    return get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=warmup_steps(args, total_steps),
        num_training_steps=total_steps,
    )
