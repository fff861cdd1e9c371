"""Saves a model so plain transformers/peft can load it back."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def save_model(
    bundle, model, path: Path, state_dict: dict | None = None, final_path: Path | None = None
) -> None:
    """`state_dict`: the weights to write when the live model does not hold them (DeepSpeed ZeRO-3 shards);
    `final_path`: where `path` will be renamed to (the LoRA adapter records its base model's place there)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if bundle.finetuning_type == "lora":
        base_path = bundle.base_model_path
        if base_path is None:  # a model built from config has no checkpoint: save its base weights beside it
            base_path = str((Path(final_path or path) / "base_model").resolve())
            bundle.unsaved_base.save_pretrained(path / "base_model")
            bundle.tokenizer.save_pretrained(path / "base_model")
        for cfg in model.peft_config.values():
            cfg.base_model_name_or_path = base_path
    model.save_pretrained(path, state_dict=state_dict)
    bundle.tokenizer.save_pretrained(path)


def save_model_atomic(bundle, model, path: Path, state_dict: dict | None = None) -> None:
    """`save_model` into `<path>.tmp/`, renamed to `path` only when complete: a full disk or a kill during the
    save leaves no `final_model/` without weights (the previous one, if any, stays until the rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model(bundle, model, tmp, state_dict=state_dict, final_path=path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
