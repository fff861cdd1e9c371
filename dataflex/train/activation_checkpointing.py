"""`trainer.gradient_checkpointing`: HF's activation checkpointing of the decoder layers, non-reentrant."""

from __future__ import annotations

import torch.nn as nn

from dataflex.train.signals.losses import unwrap
from dataflex.utils.logging import logger


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Checkpoints every decoder layer (`use_reentrant=False`, which works with frozen inputs and DDP), turns
    off the KV cache, and, when some parameters are frozen (LoRA, freeze), makes the input embeddings'
    output require grad so the checkpointed layers still back-propagate into the adapters (HF's
    `enable_input_require_grads`, as peft/LLaMA-Factory do)."""
    inner = unwrap(model)
    if not getattr(inner, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"trainer.gradient_checkpointing=true: {type(inner).__name__} does not support HF gradient "
            "checkpointing; set trainer.gradient_checkpointing=false."
        )
    kwargs = {"use_reentrant": False}
    if hasattr(inner, "activation_checkpointing_enable"):  # transformers >= 5.2 name
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(inner.config, "use_cache", None):
        inner.config.use_cache = False
    if any(not p.requires_grad for p in model.parameters()):
        inner.enable_input_require_grads()
    logger.info("gradient checkpointing on (non-reentrant, every decoder layer)")
