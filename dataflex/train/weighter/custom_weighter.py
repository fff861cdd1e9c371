"""`component=custom`: the spec's CustomWeighter example with lint fixes only (import order, whitespace,
`X | Y` annotation); a template for your own weighter.

In DataFlex `losses` holds the per-sample losses of the *global* batch (see base_weighter), so the uniform
weights below reproduce the plain mean loss exactly.
"""

from typing import Any

import torch
from torch import nn

from dataflex.core.registry import register_weighter
from dataflex.utils.logging import logger

from .base_weighter import Weighter


@register_weighter("custom")
class CustomWeighter(Weighter):
    def __init__(self, strategy: str = "uniform", **kwargs):
        """
        Custom weighter constructor

        Args:
            strategy: Weighting strategy, such as "uniform", "loss_based", etc.
            **kwargs: Additional parameters passed to base class
        """
        super().__init__(**kwargs)
        self.strategy = strategy
        logger.info(f"CustomWeighter initialized with strategy: {strategy}")

    def get_weighted_loss(
        self,
        losses: torch.Tensor,
        *,
        ctx: Any = None,
        model: nn.Module | None = None,
        inputs: dict[str, torch.Tensor | Any] | None = None,
    ) -> torch.Tensor:
        """
        Core weighting logic.
        Calculate weighted total loss based on sample losses.

        Args:
            losses: Per-sample loss for current device (B,)
            ctx: Trainer context, can access global_step and other information
            model: Current model
            inputs: Input data

        Returns:
            Weighted total loss (scalar)
        """
        # Example logic: simple uniform weighting
        if not torch.is_tensor(losses) or losses.dim() == 0:
            return losses

        # Here you can implement your custom weighting strategy
        # For example: based on loss magnitude, gradient information, sample difficulty, etc.
        weights = torch.ones_like(losses) / losses.numel()
        weighted_loss = torch.sum(weights * losses)

        return weighted_loss
