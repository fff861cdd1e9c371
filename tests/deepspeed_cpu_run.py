"""`python tests/deepspeed_cpu_run.py <dataflex-run overrides>`: one process of `dataflex-run` with accelerate
allowed to use DeepSpeed on a CPU-only machine, to exercise our loop with a real DeepSpeed engine in tests.

accelerate enables DeepSpeed only when told `cpu=False` (which our loop says only when CUDA is available); on
a host without GPUs a single process then gets DeepSpeed on its CPU accelerator (`DS_ACCELERATOR=cpu`, world
size 1). Two processes do not work this way: accelerate then sees no backend and reports one process each.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.update(MASTER_ADDR="127.0.0.1", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
os.environ.setdefault("MASTER_PORT", "29533")

import accelerate  # noqa: E402


class _DeepSpeedOnCpu(accelerate.Accelerator):
    def __init__(self, *args, cpu: bool = False, **kwargs) -> None:
        super().__init__(*args, cpu=False, **kwargs)


def _shard_everything(build):
    """ZeRO-3 keeps parameters below a size threshold whole (all of the tiny model's): shard them all."""

    def plugins(*args, **kwargs) -> dict:
        out = build(*args, **kwargs)
        if "deepspeed_plugin" in out:
            out["deepspeed_plugin"].deepspeed_config["zero_optimization"][
                "stage3_param_persistence_threshold"
            ] = 0
        return out

    return plugins


if __name__ == "__main__":
    from fault_injection import install_from_env

    import dataflex.train.loop as loop

    install_from_env()  # DATAFLEX_FAULT=step:N / save:N (the resume tests)

    accelerate.Accelerator = _DeepSpeedOnCpu
    loop.accelerator_plugins = _shard_everything(loop.accelerator_plugins)
    from dataflex.cli import main

    sys.argv = ["dataflex-run", *sys.argv[1:]]
    main()
