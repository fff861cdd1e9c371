"""Launcher presets in conf/hydra/launcher/ (the SLURM one cannot run here; it must compose)."""

from __future__ import annotations


def test_slurm_launcher_preset_composes(compose):
    cfg = compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu", return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.timeout_min == 240
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"  # inside the sweep dir
