"""The `dist=` group: how the model is distributed over processes (DDP, DeepSpeed ZeRO, FSDP), passed
through to accelerate's plugins. Launch the processes with `launcher.nproc_per_node` or torchrun."""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("ddp", "deepspeed", "fsdp")


@dataclass
class DistConfig:
    strategy: str = "ddp"
    """`ddp` (plain data parallel; also the single-process default), `deepspeed` or `fsdp`."""
    zero_stage: int = 2
    """deepspeed: ZeRO stage 1, 2 or 3."""
    offload_optimizer_device: str = "none"
    """deepspeed: `none`, `cpu` or `nvme`."""
    offload_param_device: str = "none"
    """deepspeed (ZeRO-3): `none`, `cpu` or `nvme`."""
    zero3_save_16bit_model: bool = True
    """deepspeed ZeRO-3: gather the full 16-bit weights when saving so plain transformers can load them."""
    fsdp_sharding_strategy: str = "FULL_SHARD"
    """fsdp: FULL_SHARD, SHARD_GRAD_OP, NO_SHARD, HYBRID_SHARD."""
    fsdp_auto_wrap_policy: str = "TRANSFORMER_BASED_WRAP"
    """fsdp: TRANSFORMER_BASED_WRAP (wraps each decoder layer) or SIZE_BASED_WRAP."""
    fsdp_cpu_offload: bool = False
    fsdp_state_dict_type: str = "FULL_STATE_DICT"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"dist.strategy={self.strategy!r} is unknown; choose one of {STRATEGIES}.")
        if self.zero_stage not in (1, 2, 3):
            raise ValueError(f"dist.zero_stage must be 1, 2 or 3, got {self.zero_stage}.")
        for key in ("offload_optimizer_device", "offload_param_device"):
            if getattr(self, key) not in ("none", "cpu", "nvme"):
                raise ValueError(f"dist.{key} must be none, cpu or nvme, got {getattr(self, key)!r}.")
        if self.fsdp_sharding_strategy not in ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"):
            raise ValueError(f"dist.fsdp_sharding_strategy={self.fsdp_sharding_strategy!r} is unknown.")


def accelerator_plugins(dist: DistConfig | None, max_grad_norm: float, micro_batch_size: int = 1) -> dict:
    """Keyword arguments for `accelerate.Accelerator` that realise `dist` (empty for ddp).

    DeepSpeed gets the micro-batch size and the clipping norm written into its config: our loop prepares no
    dataloader for accelerate to read the batch size from (`prepare` refuses without one), and an unset
    norm becomes accelerate's default 1.0 even for `max_grad_norm=0` (no clipping)."""
    if dist is None or dist.strategy == "ddp":
        return {}
    if dist.strategy == "deepspeed":
        try:
            from accelerate.utils import DeepSpeedPlugin
        except ImportError as err:  # pragma: no cover - depends on accelerate's build
            raise ImportError("dist=deepspeed_* needs DeepSpeed: pip install deepspeed") from err
        # gradient_accumulation_steps=1: the loop accumulates itself (each micro-batch's loss is already
        # normalised by the global batch, and it marks the boundary); DeepSpeed would divide the loss again.
        plugin = DeepSpeedPlugin(
            zero_stage=dist.zero_stage,
            gradient_accumulation_steps=1,
            offload_optimizer_device=dist.offload_optimizer_device,
            offload_param_device=dist.offload_param_device,
            zero3_save_16bit_model=dist.zero3_save_16bit_model,
        )
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch_size
        plugin.deepspeed_config["gradient_clipping"] = float(max_grad_norm or 0.0)
        return {"deepspeed_plugin": plugin}
    from accelerate.utils import FullyShardedDataParallelPlugin

    return {
        "fsdp_plugin": FullyShardedDataParallelPlugin(
            sharding_strategy=dist.fsdp_sharding_strategy,
            auto_wrap_policy=dist.fsdp_auto_wrap_policy,
            cpu_offload=dist.fsdp_cpu_offload,
            state_dict_type=dist.fsdp_state_dict_type,
        )
    }
