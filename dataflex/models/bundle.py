from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ModelBundle:
    """What a model config builds: the (possibly peft-wrapped) model, its tokenizer, and how to save it."""

    model: Any
    tokenizer: Any
    finetuning_type: str = "full"
    base_model_path: str | None = None
    """Where the base weights of a LoRA model can be loaded from (None: saved next to the adapter)."""
    unsaved_base: Any = None
    """LoRA on a model built from config (no checkpoint on disk): a copy of the base weights to save."""
