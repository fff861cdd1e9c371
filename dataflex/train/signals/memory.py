"""A before-training estimate of what per-sample gradient features cost, so an impossible setting fails
with the knob to turn instead of an out-of-memory kill hours later."""

from __future__ import annotations

import torch

from dataflex.train.signals.zero3 import full_numel  # ZeRO-3: the full size, not the shard

BYTES = 4  # features and per-sample gradients are kept in float32
SAFETY = 0.8  # leave room for the model, optimizer and activations


def available_memory_bytes(device: torch.device | str) -> int:
    """Free memory of the accelerator, or MemAvailable of this host for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62  # unknown platform: do not block


def gradient_feature_bytes(
    trainable_params: int, grad_batch_size: int, proj_dim: int, num_features: int
) -> int:
    """Per-sample gradients of one scoring batch plus the projected features kept for a selection."""
    return BYTES * (grad_batch_size * trainable_params + num_features * proj_dim)


def check_gradient_feature_memory(
    model: torch.nn.Module,
    *,
    grad_batch_size: int,
    proj_dim: int,
    num_features: int,
    device: torch.device | str,
    forms_per_sample_gradients: bool = True,
) -> None:
    """`forms_per_sample_gradients=False` (Kronecker projection) leaves only the features to hold."""
    trainable = (
        sum(full_numel(p) for p in model.parameters() if p.requires_grad) if forms_per_sample_gradients else 0
    )
    need = gradient_feature_bytes(trainable, grad_batch_size, proj_dim, num_features)
    available = available_memory_bytes(device)
    if need > SAFETY * available:
        gib = 1 << 30
        raise MemoryError(
            f"per-sample gradient features need about {need / gib:.1f} GiB "
            f"({grad_batch_size} samples x {trainable:,} trainable parameters, "
            f"plus {num_features:,} features x proj_dim {proj_dim}) but only "
            f"{available / gib:.1f} GiB is free on {device}. "
            f"Lower trainer.grad_batch_size (now {grad_batch_size}), "
            f"component.proj_dim (now {proj_dim}) or trainer.candidate_pool_size, or train fewer parameters "
            "(model.finetuning_type=lora)."
        )
