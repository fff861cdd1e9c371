"""Run a function in N CPU processes (gloo) and collect each rank's result: multi-process tests without GPUs.

    from distributed_utils import run_distributed
    results = run_distributed(train_and_report, 2, cfg)   # [rank0_result, rank1_result]

`fn(*args)` runs in a fresh spawned process per rank with MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK
set before anything initialises torch.distributed, so `accelerate.Accelerator(cpu=True)` (the training loop)
or `torch.distributed.init_process_group("gloo")` in `fn` joins the group. `fn` must be importable
(module-level) and its arguments and return value picklable. A failure on any rank is re-raised here with
that rank's traceback.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn: Callable[..., Any], world_size: int, port: int, out_dir: str, args: tuple) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size),
            "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": "",
            "WANDB_MODE": "disabled",
        }
    )
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    path = Path(out_dir) / f"rank{rank}.pkl"
    try:
        result = ("ok", fn(*args))
    except BaseException:  # noqa: BLE001 - every failure goes back to the parent with its traceback
        result = ("error", traceback.format_exc())
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    path.write_bytes(pickle.dumps(result))


def run_distributed(
    fn: Callable[..., Any], world_size: int = 2, *args: Any, timeout: float = 600
) -> list[Any]:
    """`[fn(*args) on rank 0, ..., on rank world_size-1]`, each in its own gloo CPU process."""
    with tempfile.TemporaryDirectory() as out_dir:
        ctx = mp.start_processes(
            _worker,
            args=(fn, world_size, free_port(), out_dir, args),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for proc in ctx.processes:  # only the processes started above
                    proc.terminate()
                raise TimeoutError(f"run_distributed: {fn.__name__} did not finish within {timeout}s")
        results = []
        for rank in range(world_size):
            path = Path(out_dir) / f"rank{rank}.pkl"
            if not path.is_file():
                raise RuntimeError(f"rank {rank} of {world_size} produced no result")
            status, value = pickle.loads(path.read_bytes())
            if status == "error":
                raise RuntimeError(f"rank {rank} of {world_size} failed:\n{value}")
            results.append(value)
        return results
