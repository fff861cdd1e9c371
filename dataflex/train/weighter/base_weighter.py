"""The weighter API (public, as in the spec): a weighter turns the losses of a step into the scalar that is
back-propagated. `get_weighted_loss(losses, *, ctx, model, inputs)` is the one method to implement.

How DataFlex calls it (see `dataflex/train/trainer/dynamic_weight.py`): `losses` holds the per-sample
token-mean losses of the *global* batch (every micro-batch of every rank, rank order), as a detached leaf
tensor. The returned scalar L defines the update: the trainer back-propagates
`sum_i dL/dloss_i * loss_i(theta)` through each micro-batch, so for `L = sum_i w_i * loss_i` with detached
weights (every built-in weighter, and the papers they follow) `w_i` is exactly the weight of sample i, and
gradient accumulation or the number of processes cannot change the update. Weights that sum to 1 keep the
loss on the scale of the plain mean loss (uniform weights reproduce it).

A token-level weighter (`level = "token"`, e.g. rho1) receives the losses of every supervised token of the
global batch instead, with `ctx.token_sample` mapping each token to its sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dataflex.train.signals.losses import per_sample_losses
from dataflex.utils.logging import logger

__all__ = ["Weighter", "WeightContext", "logger"]

CONTEXT_KEYS = ("train_data", "eval_data", "accelerator", "tokenizer", "pad_token_id", "seed", "run_dir")
"""Objects the trainer offers to a weighter's constructor (only those its signature accepts, or all of them
when it takes **kwargs and forwards them to `Weighter.__init__`)."""


@dataclass
class WeightContext:
    """What a weighter may read about the current optimizer step (`ctx` of `get_weighted_loss`)."""

    global_step: int
    """0-based index of the optimizer step being computed (= optimizer steps done so far, as in HF)."""
    total_steps: int
    warmup_steps: int
    sample_ids: torch.Tensor
    """(N,) item ids (into the training data) of the global batch, rank order."""
    domain_ids: torch.Tensor
    """(N,) domain index of each sample; names in `domain_names`."""
    token_count: torch.Tensor
    """(N,) supervised tokens per sample."""
    domain_names: list[str]
    local_slice: slice
    """Entries of `losses` that belong to this rank (its micro-batches, in order)."""
    rank: int = 0
    world_size: int = 1
    level: str = "sample"
    token_sample: torch.Tensor | None = None
    """Token-level weighters only: (T,) position (0..N-1) of the sample each token belongs to."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def step(self) -> int:
        return self.global_step


class Weighter:
    """Base class of every weighter. Subclasses implement `get_weighted_loss`; stateful ones also
    `state_dict`/`load_state_dict` so a resumed run continues exactly; `metrics()` adds their own numbers
    (e.g. the temperature) to the step's metrics."""

    level: str = "sample"
    """`sample`: `losses` are per-sample token means; `token`: per supervised token."""
    context_keys = CONTEXT_KEYS
    """The run context a subclass taking **kwargs receives (and passes on to this constructor)."""

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(CONTEXT_KEYS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown parameter(s) {unknown}; remove them from "
                "`component` (or add them to the weighter's __init__)."
            )
        self.train_data = kwargs.get("train_data")
        self.eval_data = kwargs.get("eval_data")
        self.accelerator = kwargs.get("accelerator")
        self.tokenizer = kwargs.get("tokenizer")
        self.pad_token_id = kwargs.get("pad_token_id")
        self.seed = kwargs.get("seed", 42)
        self.run_dir = kwargs.get("run_dir")

    @property
    def device(self) -> torch.device:
        return self.accelerator.device if self.accelerator is not None else torch.device("cpu")

    @property
    def pad_id(self) -> int:
        """`pad_token_id`, for weighters that collate batches of their own (the dynamic trainer passes it)."""
        if self.pad_token_id is None:
            raise ValueError(f"{type(self).__name__} needs pad_token_id; the dynamic trainer passes it.")
        return int(self.pad_token_id)

    def get_weighted_loss(
        self,
        losses: torch.Tensor,
        *,
        ctx: Any = None,
        model: nn.Module | None = None,
        inputs: dict[str, torch.Tensor | Any] | None = None,
    ) -> torch.Tensor:
        """The scalar to minimise, built from `losses` (N,) of the global batch; see the module docstring."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_weighted_loss(losses, *, ctx, model, inputs)"
        )

    def attach(self, model: nn.Module) -> None:
        """Called once with the (unwrapped) training model before training, e.g. to register a forward hook
        that reuses the training forward's activations."""

    def begin_step(self, step: int, weighted: bool) -> None:
        """Called before the forward passes of every optimizer step; `weighted` says whether
        `get_weighted_loss` will be called for it."""

    def metrics(self) -> dict[str, float]:
        """Extra per-step numbers for metrics.jsonl (keys are prefixed with `weight/`)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got state keys {sorted(state)}.")

    @staticmethod
    def _per_sample_loss_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B,) token-mean loss per sample (shifted causal-LM cross entropy, -100 labels ignored); kept for
        weighters written against the original DataFlex base class."""
        return per_sample_losses(logits, labels).mean
