"""Model builders: the embedded tiny LLaMA, any HF causal LM, and the fine-tuning wrappers."""

from dataflex.models.bundle import ModelBundle

__all__ = ["ModelBundle"]
