"""full / lora / freeze: which parameters train in any HF causal LM (LLaMA `layers`, GPT-2's `h`, ...)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from dataflex.utils.logging import logger

FINETUNING_TYPES = ("full", "lora", "freeze")
ALL_LINEAR = "all-linear"
"""peft's shorthand: every nn.Linear and transformers `Conv1D` (GPT-2's) except the output head."""


def lora_target_modules(lora_target: Sequence[str]) -> str | list[str]:
    """`[all]` → peft's `all-linear` (finds `Conv1D` too), else the module names as given."""
    targets = [str(t) for t in lora_target]
    if "all" in targets:
        if len(targets) > 1:
            raise ValueError(
                f"model.lora_target={targets}: `all` already targets every linear layer; pass either "
                "[all] or a list of module names (e.g. [q_proj,v_proj])."
            )
        return ALL_LINEAR
    if not targets:
        raise ValueError("model.lora_target is empty; pass [all] or module names such as [q_proj,v_proj].")
    return targets


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The list of decoder blocks, whatever it is called (`model.layers`, `transformer.h`, `gpt_neox.layers`,
    ...): the `nn.ModuleList` with `config.num_hidden_layers` entries holding the most parameters."""
    num_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    lists = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) == num_layers and num_layers > 0
    ]
    if not lists:
        raise ValueError(
            f"model.finetuning_type=freeze: no list of {num_layers} decoder layers found in "
            f"{type(model).__name__}; use finetuning_type=full or lora."
        )
    return max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def apply_finetuning(
    model: nn.Module,
    finetuning_type: str,
    *,
    lora_rank: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    lora_target: Sequence[str] = ("all",),
    freeze_trainable_layers: int = 1,
    freeze_extra_modules: Sequence[str] = (),
) -> nn.Module:
    if finetuning_type not in FINETUNING_TYPES:
        raise ValueError(
            f"model.finetuning_type={finetuning_type!r} is unknown; choose one of {FINETUNING_TYPES}."
        )
    if finetuning_type == "lora":
        from peft import LoraConfig, get_peft_model

        if lora_rank <= 0:
            raise ValueError(f"model.lora_rank must be > 0, got {lora_rank}.")
        config = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=lora_target_modules(lora_target),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    elif finetuning_type == "freeze":
        _freeze(model, freeze_trainable_layers, freeze_extra_modules)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        f"finetuning_type={finetuning_type}: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / max(total, 1):.2f}%)"
    )
    return model


def _freeze(model: nn.Module, trainable_layers: int, extra: Sequence[str]) -> None:
    """Trains the last `trainable_layers` decoder blocks (the first |n| when negative) plus any parameter
    whose name contains one of `extra`; everything else is frozen."""
    prefix, layers = decoder_layers(model)
    num_layers = len(layers)
    if trainable_layers == 0 or abs(trainable_layers) > num_layers:
        raise ValueError(
            f"model.freeze_trainable_layers must be in [-{num_layers}, -1] or [1, {num_layers}], "
            f"got {trainable_layers}."
        )
    ids = (
        range(num_layers - trainable_layers, num_layers) if trainable_layers > 0 else range(-trainable_layers)
    )
    keep = tuple(f"{prefix}.{i}." for i in ids)
    extra = [str(e) for e in extra]
    names = [name for name, _ in model.named_parameters()]
    unmatched = [e for e in extra if not any(e in name for name in names)]
    if unmatched:
        raise ValueError(
            f"model.freeze_extra_modules={unmatched} match no parameter name of "
            f"{type(model).__name__} (e.g. {names[0]!r}); fix or drop them."
        )
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(keep) or any(e in name for e in extra))
