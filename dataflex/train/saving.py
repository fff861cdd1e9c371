"""Saves a model so plain transformers/peft can load it back."""

from __future__ import annotations

from pathlib import Path


def save_model(bundle, model, path: Path, state_dict: dict | None = None) -> None:
    """`state_dict`: the weights to write when the live model does not hold them (DeepSpeed ZeRO-3 shards)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if bundle.finetuning_type == "lora":
        base_path = bundle.base_model_path
        if base_path is None:  # a model built from config has no checkpoint: save its base weights beside it
            base_path = str((path / "base_model").resolve())
            bundle.unsaved_base.save_pretrained(base_path)
            bundle.tokenizer.save_pretrained(base_path)
        for cfg in model.peft_config.values():
            cfg.base_model_name_or_path = base_path
    model.save_pretrained(path, state_dict=state_dict)
    bundle.tokenizer.save_pretrained(path)
