"""`trainer=dynamic_reorder`'s schema: training arguments + the ordering pattern and where its scores come
from. Torch-free (checked at compose time)."""

from __future__ import annotations

from dataclasses import dataclass

from dataflex.config.trainer import TrainingArguments

PATTERNS = ("shuffle", "sorting", "folding", "zigzag", "segment", "stair", "saw")
SCORE_SOURCES = ("field", "file", "loss")


@dataclass
class DynamicReorderConfig(TrainingArguments):
    """Every epoch trains every item exactly once, in the order `pattern` gives the items' scores
    (microsoft/data-efficacy's orderings; dataflex/train/reorder/patterns.py has the definitions)."""

    _target_: str = "dataflex.train.trainer.dynamic_reorder.DynamicReorderTrainer"
    pattern: str = "folding"
    """shuffle | sorting | folding | zigzag | segment | stair | saw."""
    score_source: str = "loss"
    """loss: the model's current token-mean loss of each item (forward only, sharded over ranks);
    field: a numeric column of the training rows named by `score_field` (precomputed scores);
    file: one score per training item, in the data's order, read from `score_path`."""
    score_field: str | None = None
    """The column holding each row's score when score_source=field (data-efficacy: average_test_score)."""
    score_path: str | None = None
    """score_source=file: a .npy array or a text file with one number per line (relative to the cwd)."""
    update_step: int = 0
    """0: static, the scores are taken once (before the first step) and every epoch follows them. k > 0:
    dynamic (score_source=loss), the items not trained yet in this epoch are re-scored and re-ordered every
    k steps, and each epoch starts from fresh scores of all items (consume-once: nothing is repeated or
    skipped within an epoch)."""
    ascending: bool = True
    """Polarity: True puts low scores first (high scores later; with loss scores: easy first)."""
    layers: int = 3
    """Passes of folding / zigzag and of the stair / saw transition regions (data-efficacy: 5, 5, 3, 2)."""
    sections: int = 3
    """stair / saw: equal sections of the sorted order (data-efficacy: stair 2, saw 3)."""
    folding_ratio: float = 0.075
    """stair / saw: transition radius as a share of the items (data-efficacy: stair 0.225, saw 0.075)."""
    x_pct: float = 10.0
    """segment: percent of the order in the front segment."""
    y_pct: float = 10.0
    """segment: percent of the order in the back segment."""
    front_is_high: bool = False
    """segment: the front segment takes the highest scores (False: the lowest)."""
    back_is_high: bool = True
    """segment: the back segment takes the highest scores (False: the lowest)."""
    window: int = 0
    """Local shuffle ("jittering") inside consecutive windows of this many items; 0/1: off."""
    reorder_seed: int | None = None
    """Seed of the random parts of the order (shuffle, segment, window). None: trainer.seed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pattern not in PATTERNS:
            raise ValueError(f"trainer.pattern={self.pattern!r} is not one of {', '.join(PATTERNS)}.")
        if self.score_source not in SCORE_SOURCES:
            raise ValueError(
                f"trainer.score_source={self.score_source!r} is not one of {', '.join(SCORE_SOURCES)}."
            )
        if self.score_source == "field" and not self.score_field:
            raise ValueError(
                "trainer.score_source=field needs trainer.score_field=<the column holding each row's score>."
            )
        if self.score_source == "file" and not self.score_path:
            raise ValueError(
                "trainer.score_source=file needs trainer.score_path=<.npy or one score per line>."
            )
        if self.update_step < 0:
            raise ValueError(f"trainer.update_step must be >= 0 (0: static), got {self.update_step}.")
        if self.update_step and self.score_source != "loss":
            raise ValueError(
                f"trainer.update_step > 0 re-scores during training, but score_source={self.score_source} "
                "scores never change; set trainer.update_step=0 or trainer.score_source=loss."
            )
        for key in ("layers", "sections"):
            if getattr(self, key) < 1:
                raise ValueError(f"trainer.{key} must be >= 1, got {getattr(self, key)}.")
        if self.folding_ratio < 0:
            raise ValueError(f"trainer.folding_ratio must be >= 0, got {self.folding_ratio}.")
        if self.x_pct < 0 or self.y_pct < 0:
            raise ValueError(f"trainer.x_pct / y_pct must be >= 0, got {self.x_pct}, {self.y_pct}.")
        if self.window < 0:
            raise ValueError(f"trainer.window must be >= 0 (0: off), got {self.window}.")
