"""Small collective helpers that are no-ops in a single process."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

_WRAPPER_CHILDREN = ("module", "_orig_mod", "_fsdp_wrapped_module")
"""Where DDP / DataParallel / DeepSpeed (`module`), torch.compile (`_orig_mod`) and FSDP keep the model."""


def maybe_wrapped(model: torch.nn.Module) -> bool:
    """True when `model` holds a child under a wrapper's attribute name. Only then is accelerate's unwrapper
    needed: its first call imports torch.distributed.fsdp (~0.5 s on a CPU, inside the first training step
    or update of a run), which a bare or peft model never needs."""
    children = getattr(model, "_modules", {})
    return any(name in children or name in vars(model) for name in _WRAPPER_CHILDREN)


def unwrap_parallel(accelerator: Any, model: torch.nn.Module) -> torch.nn.Module:
    """`accelerator.unwrap_model(model)`, skipped for a model no DDP/DeepSpeed/FSDP/compile wrapper holds."""
    return accelerator.unwrap_model(model) if maybe_wrapped(model) else model


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device(tensor: torch.Tensor) -> torch.device:
    """NCCL only moves CUDA tensors: signals kept on the CPU travel through the current GPU."""
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum across ranks (returns a new tensor on the input's device; the input is left untouched)."""
    if not is_distributed():
        return tensor.detach().clone()
    out = tensor.detach().to(_comm_device(tensor), copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(tensor.device)


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenates a (n_r, ...) tensor from every rank in rank order (sizes may differ per rank)."""
    if not is_distributed():
        return tensor.detach().clone()
    world = dist.get_world_size()
    home, tensor = tensor.device, tensor.detach().to(_comm_device(tensor))
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor.detach()
    chunks = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    return torch.cat([c[: int(s.item())] for c, s in zip(chunks, sizes)]).to(home)


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s Python object on every rank (decisions made once, shared)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def average_gradients(model: torch.nn.Module) -> None:
    """Averages `.grad` over ranks (for steps that bypass DDP's own sync).

    Every rank must issue the same collectives in the same order, so the set of parameters to reduce is
    agreed first: one all-reduce (MAX) of a has-gradient flag per trainable parameter. A parameter with a
    gradient on any rank (a conditionally used one: an MoE expert no token of this rank was routed to) gets a
    zero gradient where it has none, and is reduced everywhere; a parameter with a gradient on no rank keeps
    `.grad=None` (so optimizers skip it exactly as in one process)."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    flag_device = _comm_device(params[0])
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8, device=flag_device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    for param, anyone in zip(params, has_grad.tolist()):
        if not anyone:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad.div_(world)
