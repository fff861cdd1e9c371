"""Best-model tracking and early stopping on one logged eval metric (HF Trainer's `load_best_model_at_end`,
`metric_for_best_model`, `greater_is_better` and `EarlyStoppingCallback`).

As in HF, the best model is a checkpoint: only steps with a checkpoint (or the last step, whose weights are
live) compete, so `save_steps` is a multiple of `eval_steps`; early stopping counts every evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def metric_key(name: str) -> str:
    """`loss` / `eval_loss` (HF's spellings) / `loss/target` / `eval/loss/target` → `eval/...`."""
    if name.startswith("eval/"):
        return name
    return "eval/" + name.removeprefix("eval_")


def check_metric_available(args, domain_names: Sequence[str] | None) -> None:
    """Before the model loads: the metric must be one the evaluation will log (`domain_names` None: the data
    has no eval split)."""
    if not (args.load_best_model_at_end or args.early_stopping_patience):
        return
    if domain_names is None:
        raise ValueError(
            "trainer.load_best_model_at_end / trainer.early_stopping_patience need an eval split: "
            "the data has none (add `eval:` to the datasets or set data.val_size)."
        )
    keys = ["eval/loss", "eval/ppl"] + [f"eval/{m}/{d}" for m in ("loss", "ppl") for d in domain_names]
    if metric_key(args.metric_for_best_model) not in keys:
        raise ValueError(
            f"trainer.metric_for_best_model={args.metric_for_best_model!r} is not an eval metric of "
            f"this data; choose one of {keys}."
        )


class BestModelTracker:
    """Follows `metric_for_best_model` over evaluations; its state is saved in checkpoints."""

    def __init__(self, args) -> None:
        self.key = metric_key(args.metric_for_best_model)
        name = self.key.removeprefix("eval/")
        self.greater = (
            args.greater_is_better
            if args.greater_is_better is not None
            else not ("loss" in name or "ppl" in name)
        )
        self.patience = args.early_stopping_patience
        self.threshold = args.early_stopping_threshold
        self.best_value: float | None = None
        """Best value among candidate (checkpointed) steps: what load_best_model_at_end restores."""
        self.best_step: int | None = None
        self.stop_value: float | None = None
        """Best value among all evaluations, which early stopping compares with (HF keeps both too)."""
        self.evals_without_improvement = 0

    def _better(self, value: float, than: float | None, margin: float = 0.0) -> bool:
        if than is None:
            return True
        return value > than + margin if self.greater else value < than - margin

    def update(self, metrics: dict[str, float], step: int, candidate: bool) -> bool:
        """Records one evaluation; `candidate`: its weights are kept (a checkpoint, the last step). Returns
        True when early stopping says stop (the stopping step's weights are the final model, so it competes
        too)."""
        value = float(metrics[self.key])
        stop = False
        if self.patience:
            if math.isfinite(value) and self._better(value, self.stop_value, self.threshold):
                self.stop_value, self.evals_without_improvement = value, 0
            else:
                self.evals_without_improvement += 1
            stop = self.evals_without_improvement >= self.patience
        if math.isfinite(value) and (candidate or stop) and self._better(value, self.best_value):
            self.best_value, self.best_step = value, step
        return stop

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_step": self.best_step,
            "stop_value": self.stop_value,
            "evals_without_improvement": self.evals_without_improvement,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_step = state["best_value"], state["best_step"]
        self.stop_value, self.evals_without_improvement = (
            state["stop_value"],
            state["evals_without_improvement"],
        )
