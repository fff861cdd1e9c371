"""Reward models for NICE: any local HF sequence-classification model dir, or a tiny random one built from
config (`tiny`, for tests: its rewards are arbitrary but deterministic)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def build_tiny_reward_model(
    *,
    tokenizer_path: str | None = None,
    hidden_size: int = 32,
    num_hidden_layers: int = 1,
    num_attention_heads: int = 2,
    seed: int = 0,
):
    """(model, tokenizer): a one-output LLaMA sequence classifier with the bundled tokenizer."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from dataflex.models.tiny import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        id2label={0: "LABEL_0"},  # one output (what num_labels=1 sets; the typed spelling)
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(config)
    return model.eval(), tokenizer


class RewardModel:
    """Scores texts with a sequence classifier: the logit of a one-label head, else P(last label)."""

    def __init__(self, model, tokenizer, device="cpu", max_length: int = 512, batch_size: int = 16) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device, self.max_length, self.batch_size = device, max_length, batch_size

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> np.ndarray:
        """Scores `texts`, or (question, answer) pairs `texts[i], text_pairs[i]` encoded as a text pair (the
        reward model's tokenizer inserts its own separator/template, as reward models are trained)."""
        self.tokenizer.padding_side = "right"
        out = []
        for start in range(0, len(texts), self.batch_size):
            pairs = None if text_pairs is None else list(text_pairs[start : start + self.batch_size])
            enc = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                pairs,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            )
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float()
            out.append(logits[:, 0] if logits.shape[-1] == 1 else logits.softmax(-1)[:, -1])
        return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def load_reward_model(spec: str, device="cpu") -> RewardModel:
    """`tiny` or a local folder holding an HF sequence-classification model and its tokenizer."""
    if spec == "tiny":
        model, tokenizer = build_tiny_reward_model()
        return RewardModel(model, tokenizer, device)
    if not Path(spec).is_dir():
        raise FileNotFoundError(
            f"component.reward_model={spec!r} is not a local model folder; give a folder with an "
            "HF sequence-classification model and its tokenizer (or `tiny` for tests)."
        )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return RewardModel(
        AutoModelForSequenceClassification.from_pretrained(spec), AutoTokenizer.from_pretrained(spec), device
    )
