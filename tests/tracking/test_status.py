"""status.json around a job: a multirun goes on after a failure, a single run still raises."""

from __future__ import annotations

import json

import pytest

from dataflex.tracking.status import guarded_run


def _boom():
    raise ValueError("trainer.learning_rate must be >= 0, got -1.0.")


def test_multirun_failure_is_recorded_and_swallowed(tmp_path, caplog):
    assert guarded_run(_boom, tmp_path, multirun=True) is None
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed"
    assert status["error"] == "ValueError: trainer.learning_rate must be >= 0, got -1.0."
    assert "_boom" in status["traceback"]
    assert any("the sweep goes on" in m for m in caplog.messages)


def test_single_run_failure_is_recorded_and_raised(tmp_path):
    with pytest.raises(ValueError, match="learning_rate"):
        guarded_run(_boom, tmp_path, multirun=False)
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"


def test_status_records_where_the_run_writes(tmp_path):
    from omegaconf import OmegaConf

    assert guarded_run(lambda: {"steps": 3}, tmp_path, multirun=True) == {"steps": 3}
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "completed" and status["run_dir"] == str(tmp_path.resolve())
    cfg = OmegaConf.create({"trainer": {"output_dir": str(tmp_path / "odm")}})
    guarded_run(_boom, tmp_path, multirun=True, cfg=cfg)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and status["run_dir"] == str((tmp_path / "odm").resolve())


def test_interrupt_is_not_swallowed(tmp_path):
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        guarded_run(interrupted, tmp_path, multirun=True)  # Ctrl-C stops the whole sweep


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    guarded_run(lambda: {}, tmp_path, multirun=True)
    assert not (tmp_path / "status.json").exists()
