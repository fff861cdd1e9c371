"""`model=tiny_moe`: a small Qwen2-MoE built from config with the bundled tokenizer (no network).

Every decoder layer is sparse: a top-k router (`mlp.gate`) over `num_experts` routed experts plus a shared
SwiGLU expert (`mlp.shared_expert.gate_proj/up_proj/down_proj`) with its scalar `shared_expert_gate`.
It is the embedded case for `component=dynamic_moe` (router loads per domain, `freeze_gate`). The
training loop optimises the language-model loss only (no router load-balancing auxiliary loss).
"""

from __future__ import annotations

from dataflex.models.bundle import ModelBundle
from dataflex.models.tiny import build_from_config, load_tokenizer


def build_tiny_moe_model(
    *,
    tokenizer_path: str | None = None,
    hidden_size: int = 96,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 4,
    num_experts: int = 4,
    num_experts_per_tok: int = 2,
    moe_intermediate_size: int = 96,
    shared_expert_intermediate_size: int = 96,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = True,
    seed: int = 0,
    finetuning_type: str = "full",
    **finetuning,
) -> ModelBundle:
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    tokenizer = load_tokenizer(tokenizer_path)
    config = Qwen2MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=moe_intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        num_experts=num_experts,
        num_experts_per_tok=num_experts_per_tok,
        moe_intermediate_size=moe_intermediate_size,
        shared_expert_intermediate_size=shared_expert_intermediate_size,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return build_from_config(Qwen2MoeForCausalLM, config, tokenizer, seed, finetuning_type, **finetuning)
