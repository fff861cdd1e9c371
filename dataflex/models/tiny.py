"""The embedded default model: a small LLaMA built from config with the bundled tokenizer (no network)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from dataflex.models.bundle import ModelBundle
from dataflex.models.finetuning import apply_finetuning

BUNDLED_TOKENIZER = Path(__file__).resolve().parent / "tiny_tokenizer"


def load_tokenizer(path: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path or BUNDLED_TOKENIZER))


def build_tiny_model(
    *,
    tokenizer_path: str | None = None,
    hidden_size: int = 192,
    intermediate_size: int = 512,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 6,
    num_key_value_heads: int = 6,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = True,
    vocab_size: int | None = None,
    seed: int = 0,
    finetuning_type: str = "full",
    **finetuning,
) -> ModelBundle:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(tokenizer_path)
    if vocab_size is not None and vocab_size < len(tokenizer):
        raise ValueError(
            f"model.vocab_size={vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)."
        )
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return build_from_config(LlamaForCausalLM, config, tokenizer, seed, finetuning_type, **finetuning)


def build_from_config(
    model_cls, config, tokenizer, seed: int, finetuning_type: str, **finetuning
) -> ModelBundle:
    """Seeded random init of `model_cls(config)` plus fine-tuning (LoRA adapters included); LoRA keeps a copy
    of the base weights, which have no checkpoint on disk, so the saved adapter can be loaded back."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
        base = copy.deepcopy(model) if finetuning_type == "lora" else None
        model = apply_finetuning(model, finetuning_type, **finetuning)
    return ModelBundle(model=model, tokenizer=tokenizer, finetuning_type=finetuning_type, unsaved_base=base)
