"""DeepSpeed ZeRO specifics of per-sample gradient features; plain parameters take the plain path.

Under ZeRO-3 every parameter is partitioned over the ranks: outside its module's forward `p` is an empty
placeholder (`p.shape == (0,)`); the real shape is `p.ds_shape` and the full values exist only inside
`deepspeed.zero.GatheredParameters`. Under ZeRO-1/2/3 Adam's moments live in DeepSpeed's flat fp32
partitions, not in `optimizer.state[p]`, and the optimizer's `param_groups` hold those flat partitions.
Every DeepSpeed call made here is a collective: all ranks must make the same calls in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def is_zero3(p: torch.Tensor) -> bool:
    """True for a ZeRO-3 partitioned parameter."""
    return hasattr(p, "ds_id")


def full_shape(p: torch.Tensor) -> torch.Size:
    """The parameter's real shape (ZeRO-3: `ds_shape`, not the empty placeholder's)."""
    return p.ds_shape if is_zero3(p) else p.shape  # type: ignore[attr-defined]  # set by DeepSpeed at runtime


def full_numel(p: torch.Tensor) -> int:
    return int(p.ds_numel) if is_zero3(p) else p.numel()  # type: ignore[attr-defined]  # (DeepSpeed's)


@contextmanager
def gathered(params: Iterable[torch.Tensor]) -> Iterator[None]:
    """Inside the block the ZeRO-3 partitioned `params` hold their full values (read-only: changes are
    not written back); plain parameters are left alone."""
    partitioned = [p for p in params if is_zero3(p)]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


class _Forward(torch.nn.Module):
    """Calls `inner.forward` directly, skipping the hooks `inner(...)` would run."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.forward(*args, **kwargs)


def functional_forward(
    module: torch.nn.Module, params: dict[str, torch.Tensor], args: tuple, kwargs: dict
) -> Any:
    """`torch.func.functional_call(module, params, args, kwargs)`; for a ZeRO-3 module without its hooks,
    which would try to fetch (and fail on) the stand-in tensors functional_call puts in place of the
    parameters. Call it inside `gathered(...)` of the module's parameters."""
    from torch.func import functional_call

    if not any(is_zero3(p) for p in module.parameters(recurse=False)):
        return functional_call(module, params, args, kwargs)
    return functional_call(_Forward(module), {f"inner.{n}": t for n, t in params.items()}, args, kwargs)


def _is_deepspeed_optimizer(optimizer: Any) -> bool:
    return hasattr(optimizer, "bit16_groups") or hasattr(optimizer, "fp16_groups")


def unwrap_optimizer(optimizer: Any) -> Any:
    """The optimizer that knows the model's parameters: accelerate's wrapper's `.optimizer`, but a DeepSpeed
    ZeRO optimizer itself (its own `.optimizer` holds the flat partitions)."""
    return optimizer if _is_deepspeed_optimizer(optimizer) else getattr(optimizer, "optimizer", optimizer)


def param_groups_by_param(optimizer: Any) -> dict[int, dict]:
    """id(model parameter) -> the param group (lr, betas, eps) that trains it. DeepSpeed's ZeRO optimizers
    keep the model parameters in `bit16_groups` (ZeRO-1/2) or sub-groups `fp16_groups` (ZeRO-3) whose
    index maps to `param_groups` (which hold the flat fp32 partitions instead)."""
    if hasattr(optimizer, "bit16_groups"):  # ZeRO-1/2
        return {id(p): optimizer.param_groups[i] for i, ps in enumerate(optimizer.bit16_groups) for p in ps}
    if hasattr(optimizer, "fp16_groups"):  # ZeRO-3
        to_group = optimizer.sub_group_to_group_id
        return {
            id(p): optimizer.param_groups[to_group[i]]
            for i, ps in enumerate(optimizer.fp16_groups)
            for p in ps
        }
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


def full_adam_state(
    optimizer: Any, p: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
    """(exp_avg, exp_avg_sq, step) of `p`, full-size (None before the first step). Under DeepSpeed the
    moments are assembled from every rank's partition (a collective) and the step is the flat
    partitions' (all of them step together)."""
    if not _is_deepspeed_optimizer(optimizer):
        state = optimizer.state.get(p, {})
        return state.get("exp_avg"), state.get("exp_avg_sq"), float(state.get("step", 0))
    steps = [float(s["step"]) for s in optimizer.state.values() if "step" in s]
    if not steps:  # no optimizer step yet: DeepSpeed has no moments to assemble
        return None, None, 0.0
    from deepspeed.utils import safe_get_full_optimizer_state

    return (
        safe_get_full_optimizer_state(p, "exp_avg"),
        safe_get_full_optimizer_state(p, "exp_avg_sq"),
        max(steps),
    )
