"""Model config schemas: the embedded tiny LLaMA and any local/hub HF causal LM, with fine-tuning options."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class FinetuningConfig:
    finetuning_type: str = "full"
    """`full` (all weights), `lora` (peft adapters) or `freeze` (only the last decoder layers train)."""
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target: list[str] = field(default_factory=lambda: ["all"])
    """Module names to adapt; `[all]` = every linear layer (also GPT-2's `Conv1D`) except the output head
    (peft's `all-linear`)."""
    freeze_trainable_layers: int = 1
    """`freeze`: train the last N decoder layers (a negative N trains the first |N|); the decoder layers are
    found by structure (`model.layers`, GPT-2's `transformer.h`, ...)."""
    freeze_extra_modules: list[str] = field(default_factory=list)
    """`freeze`: extra module name fragments that also train, e.g. [embed_tokens, lm_head]."""

    def __post_init__(self) -> None:
        if self.finetuning_type not in ("full", "lora", "freeze"):
            raise ValueError(
                f"model.finetuning_type={self.finetuning_type!r} is unknown; choose full, lora or freeze."
            )
        if self.finetuning_type == "lora":
            targets = list(self.lora_target)
            if not targets or ("all" in targets and len(targets) > 1):
                raise ValueError(
                    f"model.lora_target={targets}: pass [all] (every linear layer) or module names "
                    "such as [q_proj,v_proj], not both."
                )


@dataclass
class TinyModelConfig(FinetuningConfig):
    """`model=tiny`: a LLaMA-architecture causal LM built from config with the bundled tokenizer."""

    _target_: str = "dataflex.models.tiny.build_tiny_model"
    tokenizer_path: str | None = None
    """Tokenizer folder; None: the one bundled with DataFlex."""
    hidden_size: int = 192
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 6
    num_key_value_heads: int = 6
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True
    vocab_size: int | None = None
    """Embedding/head rows; None: the tokenizer's size. A larger value pads the vocabulary (as real models
    pad theirs) to give benchmarks realistic LM-head shapes (e.g. 32000, 128256) with the bundled
    tokenizer."""
    seed: int = 0
    """Seed of the weight initialisation."""

    def __post_init__(self) -> None:
        if self.vocab_size is not None and self.vocab_size <= 0:
            raise ValueError(f"model.vocab_size must be > 0 or null, got {self.vocab_size}.")


@dataclass
class HFModelConfig(FinetuningConfig):
    """`model=hf`: any HF causal LM and tokenizer from a local folder or a hub id, by the Auto classes."""

    _target_: str = "dataflex.models.hf.load_hf_model"
    name_or_path: str = MISSING
    """A local model folder or a hub repo id (`org/name`)."""
    tokenizer_path: str | None = None
    """None: the tokenizer of `name_or_path`."""
    revision: str | None = None
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint. Off by default: only enable for code you trust."""
    dtype: str = "float32"
    """float32 | bfloat16 | float16 | auto."""
    attn_implementation: str | None = None


@dataclass
class TinyMoeModelConfig(FinetuningConfig):
    """`model=tiny_moe`: a small Qwen2-MoE (routed experts + a shared SwiGLU expert) built from config."""

    _target_: str = "dataflex.models.tiny_moe.build_tiny_moe_model"
    tokenizer_path: str | None = None
    hidden_size: int = 96
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    num_experts: int = 4
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 96
    shared_expert_intermediate_size: int = 96
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.num_experts_per_tok <= self.num_experts:
            raise ValueError(
                f"model.num_experts_per_tok must be in [1, model.num_experts={self.num_experts}], got "
                f"{self.num_experts_per_tok}."
            )
