"""full / lora / freeze: which parameters train."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from dataflex.utils.logging import logger

FINETUNING_TYPES = ("full", "lora", "freeze")


def linear_module_names(model: nn.Module) -> list[str]:
    """Leaf names of every nn.Linear except the output head (LoRA's `all` target)."""
    output = model.get_output_embeddings()
    names = {name.split(".")[-1] for name, mod in model.named_modules()
             if isinstance(mod, nn.Linear) and mod is not output}
    return sorted(names)


def apply_finetuning(model: nn.Module, finetuning_type: str, *, lora_rank: int = 8, lora_alpha: int = 16,
                     lora_dropout: float = 0.0, lora_target: Sequence[str] = ("all",),
                     freeze_trainable_layers: int = 1, freeze_extra_modules: Sequence[str] = ()) -> nn.Module:
    if finetuning_type not in FINETUNING_TYPES:
        raise ValueError(f"model.finetuning_type={finetuning_type!r} is unknown; choose one of {FINETUNING_TYPES}.")
    if finetuning_type == "lora":
        from peft import LoraConfig, get_peft_model

        if lora_rank <= 0:
            raise ValueError(f"model.lora_rank must be > 0, got {lora_rank}.")
        targets = linear_module_names(model) if list(lora_target) == ["all"] else list(lora_target)
        config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                            target_modules=targets, task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    elif finetuning_type == "freeze":
        _freeze(model, freeze_trainable_layers, freeze_extra_modules)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(f"finetuning_type={finetuning_type}: {trainable:,} trainable of {total:,} parameters "
                f"({100 * trainable / max(total, 1):.2f}%)")
    return model


def _freeze(model: nn.Module, trainable_layers: int, extra: Sequence[str]) -> None:
    num_layers = model.config.num_hidden_layers
    if trainable_layers == 0 or abs(trainable_layers) > num_layers:
        raise ValueError(f"model.freeze_trainable_layers must be in [-{num_layers}, -1] or [1, {num_layers}], "
                         f"got {trainable_layers}.")
    ids = range(num_layers - trainable_layers, num_layers) if trainable_layers > 0 else range(-trainable_layers)
    keep = [f".layers.{i}." for i in ids] + [str(e) for e in extra]
    for name, param in model.named_parameters():
        param.requires_grad_(any(k in name for k in keep))
