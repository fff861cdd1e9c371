"""How many processes a run uses (the root `launcher` node)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LauncherConfig:
    nproc_per_node: int = 1
    """Processes on this machine. > 1: `dataflex-run` composes the config once, then starts the ranks with
    torchrun (gloo on CPU, nccl on GPUs); all ranks share the run dir and only rank 0 writes to it."""
    master_port: int = 0
    """Rendezvous port for torchrun; 0 picks a free one."""

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1:
            raise ValueError(f"launcher.nproc_per_node must be >= 1, got {self.nproc_per_node}.")
