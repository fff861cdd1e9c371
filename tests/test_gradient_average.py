"""`average_gradients` with a conditionally used parameter (issue 13 item 3): a parameter that has a gradient
on one rank and none on the other must not make the ranks' collectives diverge (which hangs or mixes up
tensors); every rank ends with the same averaged gradients."""

from __future__ import annotations

import torch

from distributed_utils import run_distributed


def _conditional_step() -> dict[str, list[float] | None]:
    import torch.distributed as dist

    from dataflex.train.distributed import average_gradients

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {
            "shared": torch.nn.Linear(2, 1, bias=False),
            "expert": torch.nn.Linear(2, 1, bias=False),  # used by rank 1 only
            "unused": torch.nn.Linear(2, 1, bias=False),
        }
    )  # used by no rank
    x = torch.full((1, 2), float(rank + 1))
    out = model["shared"](x)
    if rank == 1:
        out = out + model["expert"](x)
    out.sum().backward()
    average_gradients(model)
    dist.barrier()
    return {
        name: None if p.grad is None else p.grad.flatten().tolist() for name, p in model.named_parameters()
    }


def test_a_parameter_used_on_one_rank_is_averaged_with_zeros_on_the_others():
    rank0, rank1 = run_distributed(_conditional_step, 2, timeout=120)
    assert rank0 == rank1
    # shared: grads x = [1, 1] (rank 0) and [2, 2] (rank 1) -> mean 1.5; expert: [0, 0] and [2, 2] -> mean 1.0
    assert torch.allclose(torch.tensor(rank0["shared.weight"]), torch.tensor([1.5, 1.5]))
    assert torch.allclose(torch.tensor(rank0["expert.weight"]), torch.tensor([1.0, 1.0]))
    assert rank0["unused.weight"] is None  # no rank used it: skipped by the optimizer as in one process
