"""InfoBatch's pruning knobs, declared once: `trainer=infobatch`'s schema (training arguments + the knobs) and
`trainer=pipeline`'s `prune` stage (`{kind: prune, use: infobatch, component: {prune_ratio, delta}}`) both
take them from `InfoBatchPruning`. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from dataflex.config.trainer import TrainingArguments


@dataclass
class InfoBatchPruning:
    """InfoBatch (Qin et al., ICLR 2024): skip a random `prune_ratio` share of the samples whose last loss is
    below the mean, up-weight the kept ones by 1 / (1 - prune_ratio); from delta x the run's steps on, train
    on everything with weight 1."""

    prune_ratio: float = 0.5
    """Share of the below-mean-loss samples skipped per pruned epoch (paper: 0.5; the kept share is clamped
    to >= 0.1 as in the official code)."""
    delta: float = 0.875
    """Pruning stops at delta x the run's steps (paper: 0.875 of the epochs); later epochs are complete."""

    def check(self, prefix: str) -> None:
        """Value checks; `prefix` names where the keys live (`trainer` or `component`)."""
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ValueError(f"{prefix}.prune_ratio must be in [0, 1), got {self.prune_ratio}.")
        if not 0.0 <= self.delta <= 1.0:
            raise ValueError(f"{prefix}.delta must be in [0, 1], got {self.delta}.")

    def __post_init__(self) -> None:
        self.check("component")


@dataclass
class InfoBatchConfig(InfoBatchPruning, TrainingArguments):
    """`trainer=infobatch`: every epoch is pruned as `InfoBatchPruning` says (the trainer:
    dataflex/train/trainer/infobatch.py)."""

    _target_: str = "dataflex.train.trainer.infobatch.InfoBatchTrainer"

    def __post_init__(self) -> None:
        TrainingArguments.__post_init__(self)
        self.check("trainer")
