"""`trainer=infobatch`'s schema: training arguments + InfoBatch's pruning knobs. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from dataflex.config.trainer import TrainingArguments


@dataclass
class InfoBatchConfig(TrainingArguments):
    """InfoBatch (Qin et al., ICLR 2024): each epoch skips a random `prune_ratio` share of the samples whose
    last loss is below the mean and up-weights the kept ones by 1 / (1 - prune_ratio); the last
    (1 - delta) share of the steps trains on everything with weight 1."""

    _target_: str = "dataflex.train.trainer.infobatch.InfoBatchTrainer"
    prune_ratio: float = 0.5
    """Share of the below-mean-loss samples skipped per pruned epoch (paper: 0.5; the kept share is clamped
    to >= 0.1 as in the official code)."""
    delta: float = 0.875
    """Pruning stops at delta x the run's steps (paper: 0.875 of the epochs); later epochs are complete."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ValueError(f"trainer.prune_ratio must be in [0, 1), got {self.prune_ratio}.")
        if not 0.0 <= self.delta <= 1.0:
            raise ValueError(f"trainer.delta must be in [0, 1], got {self.delta}.")
