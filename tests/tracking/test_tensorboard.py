"""logger=tensorboard (and next to wandb): real event files, read back with TensorBoard's own reader."""

from __future__ import annotations

import pytest
from tracking_helpers import DOMAINS, dynamic_records

from dataflex.tracking import build_trackers

pytest.importorskip("tensorboard")


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_scalars_histograms_and_config_land_in_event_files(tmp_path):
    from omegaconf import OmegaConf

    records = dynamic_records()
    group = build_trackers(
        run_dir=tmp_path,
        plots=False,
        tensorboard=True,
        run_config=OmegaConf.create({"trainer": {"learning_rate": 0.003}}),
    )
    for r in records:
        group.log({k: v for k, v in r.items() if k != "step"}, step=r["step"])
    group.finish()
    acc = _events(tmp_path / "tensorboard")
    tags = acc.Tags()
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == list(range(1, 9))
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in records[1:]])
    assert {f"mixture/{d}" for d in DOMAINS} | {f"eval/loss/{d}" for d in DOMAINS} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("eval/loss/noise")] == [0, 2, 4, 6, 8]
    assert "weight/values" in tags["histograms"]
    assert "config/text_summary" in tags["tensors"]


def test_logger_options_compose(compose):
    assert compose("logger=tensorboard").logger.tensorboard is True
    both = compose("logger=wandb", "logger.tensorboard=true").logger
    assert both.tensorboard is True and both._target_.endswith("build_wandb_trackers")
    assert compose().logger.tensorboard is False


def test_wandb_and_tensorboard_together(tmp_path, monkeypatch):
    from dataflex.tracking.wandb import build_wandb_trackers

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    group = build_wandb_trackers(run_dir=tmp_path, plots=False, tensorboard=True, project="p")
    group.log({"loss": 1.5}, step=1)
    group.finish()
    assert [e.value for e in _events(tmp_path / "tensorboard").Scalars("loss")] == [1.5]
    assert list(tmp_path.glob("wandb/offline-run-*"))
