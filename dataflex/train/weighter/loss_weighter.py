"""`component=loss`: instance-level loss-based reweighting of Sow et al., "Dynamic Loss-Based Sample
Reweighting for Improved Large Language Model Pretraining" (ICLR 2025).

Update rule, per step over the global batch (all micro-batches and ranks), as in the paper's Algorithm 1
and the authors' reference snippet:
  1. h_i = min-max normalisation of the losses to [-delta, delta]
     (h = 2*delta*l/(l_max-l_min) - delta*(l_max+l_min)/(l_max-l_min); the span is floored at 1e-6 so a batch
     of equal losses gives h = 0 and uniform weights);
  2. f_i = strategy(h_i): linupper min(h+delta, delta), quadratic 1 - h^2/delta^2, extremes |h|, uniform 0;
  3. w = softmax(f / r): the closed-form solution of max_w sum_i w_i f_i - r*KL(w || uniform), with the
     temperature r following the configured schedule.
The weights are computed under no_grad (stop-gradient), exactly as the paper's implementation: only
sum_i w_i * loss_i is differentiated, never the weights.

Deviations, said plainly: the authors' snippet maps `uniform` to f = h (which would still reweight); we use
f = 0, i.e. exactly uniform weights, which is what their comment ("we do not reweight here; this is our
baseline") and the paper's baseline mean. `quadratic` is the authors' `mid` function.

Which loss is weighted: the authors' trainer computes w from the per-sample token-mean losses l_i and
back-propagates sum_i w_i * N * (n_i / sum_j n_j) * l_i (n_i: the sample's supervised tokens), a
length-normalised form whose uniform case is the token-mean loss. DataFlex applies that form with
`trainer.loss_reduction=token` (then `uniform` reproduces trainer=static exactly); the dynamic_weight default
`sample` weights the per-sample means, sum_i w_i l_i (uniform = the mean of per-sample means). In the
paper's setting (packed sequences of equal length) both are the same objective.
"""

from __future__ import annotations

from typing import Any

import torch

from dataflex.config.component.weight import LossWeighterConfig
from dataflex.core.registry import register_weighter
from dataflex.train.weighter.base_weighter import Weighter


def normalize_losses(losses: torch.Tensor, delta: float) -> torch.Tensor:
    """Min-max maps the batch's losses onto [-delta, delta] (step 1)."""
    lmin, lmax = float(losses.min()), float(losses.max())
    span = max(lmax - lmin, 1e-6)
    return 2.0 * delta * losses / span - delta * (lmax + lmin) / span


def strategy_scores(h: torch.Tensor, strategy: str, delta: float) -> torch.Tensor:
    """f(h) of step 2."""
    if strategy == "linupper":
        return torch.minimum(h + delta, torch.full_like(h, delta))
    if strategy == "quadratic":
        return 1.0 - h * h / (delta * delta)
    if strategy == "extremes":
        return h.abs()
    if strategy == "uniform":
        return torch.zeros_like(h)
    raise ValueError(f"unknown strategy {strategy!r}")


def loss_weights(losses: torch.Tensor, strategy: str, delta: float, temperature: float) -> torch.Tensor:
    """Normalised weights (sum 1) for a 1-D tensor of per-sample losses; no gradient flows through them."""
    with torch.no_grad():
        f = strategy_scores(normalize_losses(losses.detach().double(), delta), strategy, delta)
        return torch.softmax(f / temperature, dim=0).to(losses.dtype)


def scheduled_temperature(
    updates: int, temperature: float, schedule: str, start: float, warmup: int
) -> float:
    """r after `updates` weighted steps. `step`: start for the first `warmup` weighted steps, then r (the
    authors' large-model recipe: near-uniform weights first); `linear`: anneal start -> r; `constant`: r."""
    if schedule == "constant" or warmup == 0 or updates >= warmup:
        return temperature
    if schedule == "step":
        return start
    return start + (temperature - start) * updates / warmup


@register_weighter("loss")
class LossWeighter(Weighter):
    Config = LossWeighterConfig

    def __init__(self, config: LossWeighterConfig | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config or LossWeighterConfig()
        self.updates = 0
        """Weighted steps done (drives the temperature schedule; part of the state)."""
        self.current_temperature = self.temperature_at(0)

    def temperature_at(self, updates: int) -> float:
        c = self.config
        return scheduled_temperature(
            updates, c.temperature, c.temperature_schedule, c.temperature_start, c.temperature_warmup_steps
        )

    def get_weighted_loss(
        self, losses: torch.Tensor, *, ctx: Any = None, model=None, inputs=None
    ) -> torch.Tensor:
        self.current_temperature = self.temperature_at(self.updates)
        weights = loss_weights(losses, self.config.strategy, self.config.delta, self.current_temperature)
        self.updates += 1
        return (weights * losses).sum()

    def metrics(self) -> dict[str, float]:
        return {"temperature": self.current_temperature}

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.current_temperature = self.temperature_at(self.updates)
