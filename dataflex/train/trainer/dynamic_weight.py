"""`trainer=dynamic_weight`: plain training for `warmup_step` steps, then every step a weighter (component)
turns the losses of the global batch into the loss that is back-propagated.

Weighted steps use the loop's deferred mode (`defer_backward`): every micro-batch is forwarded first, then
`before_backward` gathers the per-sample losses of the whole global batch (all micro-batches, all ranks),
hands them to the weighter as a detached leaf tensor x, and differentiates the weighter's scalar L(x) once:
g = dL/dx. Each micro-batch then back-propagates sum_i g_i * loss_i(theta) (times world_size, because the
loop averages gradients over ranks), which is exactly the gradient of L. So:
- weights are normalised over the global batch: accumulation 1x8 vs 2x4, or 1 vs 2 processes, give the
  same update;
- for L = sum_i w_i * loss_i with detached w (all built-in weighters, as in the papers: stop-gradient
  weights) g = w, and uniform w = 1/N gives the plain mean loss of the warmup, so the loss scale does not
  jump when weighting starts;
- g is computed identically on every rank and broadcast from rank 0, so all ranks apply the same weights.
Token-level weighters (rho1) get the per-token losses of the loop's own forward (`SampleLosses.token_loss`)
instead, so no second forward of the training model is needed.

`trainer.loss_reduction` decides what "plain loss" and a sample's weight mean: `sample` (default) — the
mean of per-sample token-mean losses, weighted as sum_i w_i l_i (the form every weighter written against the
spec's API assumes); `token` — the token-mean loss of trainer=static, and a sample-level weighter's w_i is
applied as Sow et al.'s code does: sum_i w_i * N * (n_i / sum_j n_j) * l_i (`length_weighted`), with w still
computed from the per-sample means. Under `token` uniform weights reproduce trainer=static's loss exactly;
in the paper's setting (packed, equal-length sequences) the two reductions coincide.
"""

from __future__ import annotations

from typing import Any

import torch

from dataflex.config.trainer import DynamicWeightTrainerConfig, UpdateSchedule
from dataflex.data.processor import IGNORE_INDEX
from dataflex.train.components import RunContext, build_component, check_component
from dataflex.train.context import StepContext
from dataflex.train.distributed import all_gather_cat, broadcast_object, is_distributed
from dataflex.train.signals.losses import SampleLosses, weighted_loss
from dataflex.train.trainer.base import BaseTrainer
from dataflex.train.weighter.base_weighter import WeightContext
from dataflex.train.weighter.stats import weight_stats


def length_weighted(weights: torch.Tensor, token_count: torch.Tensor) -> torch.Tensor:
    """Sow et al.'s length-normalised objective (their trainer: sum_i w_i * (n_i / sum_j n_j) * l_i * N):
    each sample's weight times N x its share of the batch's supervised tokens. Uniform w = 1/N then gives
    sum_i n_i l_i / sum_j n_j, the token-mean loss of trainer=static, exactly."""
    n = token_count.to(weights.dtype)
    return weights * len(weights) * n / n.sum().clamp(min=1)


class NonFiniteLossError(FloatingPointError):
    pass


def check_finite(values: torch.Tensor, sample_ids: torch.Tensor, step: int, what: str = "loss") -> None:
    """Fails loudly (naming the step and the samples) instead of letting NaN/inf reach the weights."""
    bad = ~torch.isfinite(values.detach().cpu())
    if bool(bad.any()):
        ids = sample_ids.detach().cpu()[bad].tolist()
        vals = values.detach().cpu()[bad].tolist()
        raise NonFiniteLossError(
            f"non-finite training {what} at step {step}: sample ids {ids[:20]} have {what} {vals[:20]}. "
            "Lower trainer.learning_rate, keep trainer.max_grad_norm > 0, or inspect these samples."
        )


class DynamicWeightTrainer(BaseTrainer):
    arguments_class = DynamicWeightTrainerConfig
    args: DynamicWeightTrainerConfig
    component_kind = "weighter"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_component(self.component_kind, self.component_config)
        own = self.component_config.get("warmup_step")
        self.warmup_step = self.args.warmup_step if own is None else int(own)
        """Plain steps before weighting: trainer.warmup_step, unless the component sets its own (rho1: 0, the
        paper applies token selection from the first step)."""
        self.weighter: Any = None
        """The Weighter (built in `setup`)."""
        self._step = 0
        self.schedule = UpdateSchedule(self.warmup_step, 1, 0)
        """Every step after the warmup is weighted; `total_steps` sets the count."""
        self._mb_weights: dict[int, torch.Tensor] = {}
        self._mb_units: dict[int, torch.Tensor] = {}
        self._last: Any = None

    # ---- schedule ------------------------------------------------------------------------------------
    def weighting(self, step: int) -> bool:
        """Step `step` (0-based: steps done before it) is weighted: the first `warmup_step` steps are
        plain."""
        return step >= self.schedule.warmup_step

    @property
    def defer_backward(self) -> bool:  # type: ignore[override]
        return self.weighting(self._step)

    def total_steps(self, global_batch_size: int) -> int:
        total = super().total_steps(global_batch_size)
        if self.warmup_step >= total:
            raise ValueError(
                f"trainer.warmup_step={self.warmup_step} >= the {total} training steps: no step "
                "would be weighted. Lower trainer.warmup_step or train longer."
            )
        self.schedule = UpdateSchedule(self.warmup_step, 1, total - self.warmup_step)
        return total

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.weighter = build_component("weighter", self.component_config, ctx)
        if self.weighter.level not in ("sample", "token"):
            raise ValueError(f"{type(self.weighter).__name__}.level must be 'sample' or 'token'.")
        self._model = ctx.accelerator.unwrap_model(ctx.model)  # once: unwrapping costs ~1 ms per call
        self._device = ctx.device
        self.weighter.attach(self._model)

    def _unwrapped(self):
        return self._model

    def next_indices(self, step: int, n: int):
        self._step = step
        if self.weighter is not None:
            self.weighter.begin_step(step, self.weighting(step))
        return super().next_indices(step, n)

    # ---- the weighted step ---------------------------------------------------------------------------
    def _units(self, all_losses: list[SampleLosses], micro: list[dict[str, torch.Tensor]]):
        """Per micro-batch: the differentiable values the weighter weighs (sample means or token losses)
        and the local sample position of each value."""
        if self.weighter.level == "sample":
            sizes = [len(mb["sample_ids"]) for mb in micro]
            starts = [sum(sizes[:k]) for k in range(len(sizes))]
            return [losses.mean for losses in all_losses], [
                torch.arange(n) + s for n, s in zip(sizes, starts)
            ]
        units, rows, start = [], [], 0
        for losses, mb in zip(all_losses, micro):
            if losses.token_loss is None:
                raise RuntimeError(
                    f"{type(self.weighter).__name__} is token-level but the loop gave no per-token "
                    "losses (SampleLosses.token_loss)."
                )
            mask = (mb["labels"][:, 1:] != IGNORE_INDEX).to(losses.token_loss.device)
            row = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(mask)
            units.append(losses.token_loss[mask])
            rows.append(row[mask].cpu() + start)
            start += len(mb["sample_ids"])
        return units, rows

    def before_backward(
        self, all_losses: list[SampleLosses], micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext
    ) -> None:
        device = self._device
        units, rows = self._units(all_losses, micro_batches)
        sizes = [u.numel() for u in units]
        gathered = ctx.gathered()
        n_samples = len(gathered["sample_ids"])
        n_local_samples = sum(len(mb["sample_ids"]) for mb in micro_batches)
        counts = all_gather_cat(torch.tensor([[sum(sizes), n_local_samples]], device=device)).cpu()
        offset, sample_offset = (int(c) for c in counts[: ctx.rank].sum(dim=0))
        if self.weighter.level == "sample":
            values = gathered["sample_loss"].float()
            unit_sample = torch.arange(n_samples)
        else:
            values = all_gather_cat(torch.cat([u.detach().float() for u in units])).cpu()
            unit_sample = all_gather_cat((torch.cat(rows) + sample_offset).to(device)).cpu()
        unit_ids = gathered["sample_ids"][unit_sample]
        what = "loss" if self.weighter.level == "sample" else "token loss"

        loss_value = float("nan")
        if not bool(torch.isfinite(values).all()) and self.args.nan_policy == "skip_step":
            # The loop drops this update; any finite weights will do, and the weighter's state is untouched.
            grads = torch.full_like(values, 1.0 / len(values))
        else:
            check_finite(values, unit_ids, ctx.step, what)
            wctx = WeightContext(
                global_step=ctx.step,
                total_steps=self.schedule.total_steps,
                warmup_steps=self.warmup_step,
                sample_ids=gathered["sample_ids"],
                domain_ids=gathered["domain_ids"],
                token_count=gathered["token_count"],
                domain_names=list(self.train_data.domain_names),
                local_slice=slice(offset, offset + sum(sizes)),
                rank=ctx.rank,
                world_size=ctx.world_size,
                level=self.weighter.level,
                token_sample=None if self.weighter.level == "sample" else unit_sample,
                device=device,
            )
            inputs = {
                "micro_batches": micro_batches,
                "sample_ids": gathered["sample_ids"],
                "domain_ids": gathered["domain_ids"],
                "token_count": gathered["token_count"],
            }
            leaf = values.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = self.weighter.get_weighted_loss(leaf, ctx=wctx, model=self._unwrapped(), inputs=inputs)
            grads = self._unit_weights(loss, leaf)
            if self.weighter.level == "sample" and self.args.loss_reduction == "token":
                grads = length_weighted(grads, gathered["token_count"])
            if is_distributed():
                grads = broadcast_object(grads)
            check_finite(grads, unit_ids, ctx.step, f"weight (from {type(self.weighter).__name__})")
            loss_value = float(loss.detach())

        local = grads[offset : offset + sum(sizes)].split(sizes)
        for losses, unit, w in zip(all_losses, units, local):
            self._mb_weights[id(losses)] = w.to(device=device, dtype=unit.dtype)
            self._mb_units[id(losses)] = unit
        sample_weights = torch.zeros(n_samples, dtype=torch.float64).index_add_(
            0, unit_sample, grads.double()
        )
        self._last = {
            "step": ctx.step,
            "weights": sample_weights,
            "domain_ids": gathered["domain_ids"],
            "loss": loss_value,
        }

    def _unit_weights(self, loss: Any, leaf: torch.Tensor) -> torch.Tensor:
        """dL/dx: the weight of every value (exactly w_i for L = sum_i w_i x_i with detached w)."""
        name = type(self.weighter).__name__
        if not torch.is_tensor(loss) or loss.dim() != 0:
            raise TypeError(
                f"{name}.get_weighted_loss must return a scalar tensor, got {type(loss).__name__} "
                f"{tuple(loss.shape) if torch.is_tensor(loss) else ''}."
            )
        grad = torch.autograd.grad(loss, leaf, allow_unused=True)[0] if loss.requires_grad else None
        if grad is None:
            raise ValueError(
                f"{name}.get_weighted_loss returned a loss that does not depend on `losses`; return "
                "e.g. (weights * losses).sum() with the weights computed under torch.no_grad()."
            )
        return grad.detach()

    def compute_loss(
        self, losses: SampleLosses, batch: dict[str, torch.Tensor], ctx: StepContext
    ) -> torch.Tensor:
        if not self.weighting(ctx.step):  # plain mean loss (NaN/inf: the loop's nan_policy)
            return super().compute_loss(losses, batch, ctx)
        try:
            weights = self._mb_weights.pop(id(losses))
            units = self._mb_units.pop(id(losses))
        except KeyError:
            raise RuntimeError("compute_loss got a micro-batch that before_backward did not weight") from None
        return weighted_loss(units, weights, ctx.world_size)

    # ---- visibility and state ------------------------------------------------------------------------
    def on_step_end(self, done: int, ctx: StepContext) -> dict[str, Any]:
        step = done - 1
        if self._last is not None and self._last["step"] == step:
            weights, domains, active = self._last["weights"], self._last["domain_ids"], True
        else:
            domains = ctx.gathered()["domain_ids"]
            weights, active = torch.full((len(domains),), 1.0 / len(domains), dtype=torch.float64), False
        every = self.args.logging_steps
        with_values = bool(every) and (done % every == 0 or done == self.schedule.total_steps)
        metrics = weight_stats(weights, domains, list(self.train_data.domain_names), with_values=with_values)
        metrics["weight/active"] = float(active)
        if active:
            metrics["weight/weighted_loss"] = self._last["loss"]
            metrics.update({f"weight/{k}": v for k, v in self.weighter.metrics().items()})
        return metrics

    def ledger_weights(self, ctx: StepContext) -> Any:
        """The data ledger's weights of step `ctx.step`: N x w_i (1.0 = the plain mean); None in warmup."""
        if self._last is None or self._last["step"] != ctx.step:
            return None
        weights = self._last["weights"]
        return (weights * len(weights)).numpy()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "weighter": self.weighter.state_dict() if self.weighter is not None else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.weighter.load_state_dict(state.get("weighter") or {})
