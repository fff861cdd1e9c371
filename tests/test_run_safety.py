"""Never lose or silently change a run: resume = the same run, completed runs are never resumed or
overwritten, stale checkpoints never leak into another run, refusals come before any folder is touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dataflex.preflight import Refused, expand_resume_flag
from dataflex.run_dir import check_output_dir, config_changes

from helpers import FAST

# -- fast: the building blocks ---------------------------------------------------------------------------


def test_config_changes_lists_what_differs_except_the_safe_keys():
    saved = OmegaConf.create(
        {
            "trainer": {"max_steps": 60, "disable_tqdm": False, "output_dir": None},
            "logger": {"_target_": "a"},
            "data": {"dataset": ["x"]},
        }
    )
    new = OmegaConf.create(
        {
            "trainer": {"max_steps": 300, "disable_tqdm": True, "output_dir": "/o", "foo": 1},
            "logger": {"_target_": "b", "project": "p"},
            "data": {"dataset": ["y"]},
        }
    )
    assert config_changes(saved, new) == [
        "data.dataset: ['x'] -> ['y']",
        "trainer.foo: (absent) -> 1",
        "trainer.max_steps: 60 -> 300",
    ]
    assert config_changes(saved, saved) == []


def _fake_run(path: Path, *names: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name.startswith(("checkpoint-", "final_model")):
            (path / name).mkdir()
            (path / name / "model.safetensors").write_text("w")
        else:
            (path / name).write_text("{}")
    return path


def test_a_completed_run_is_never_resumed(tmp_path):
    run = _fake_run(tmp_path / "done", "metrics.jsonl", "summary.json", "final_model")
    with pytest.raises(FileExistsError, match="completed run .*nothing to resume"):
        check_output_dir(run, overwrite=False, resuming=True)
    with pytest.raises(ValueError, match="overwrite_output_dir=true and trainer.resume_from_checkpoint"):
        check_output_dir(tmp_path / "new", overwrite=True, resuming=True)
    killed = _fake_run(tmp_path / "killed", "metrics.jsonl", "checkpoint-3")
    check_output_dir(killed, overwrite=False, resuming=True)  # a killed run resumes


def test_overwrite_clears_stale_checkpoints(tmp_path):
    run = _fake_run(
        tmp_path / "old", "metrics.jsonl", "summary.json", "final_model", "checkpoint-4", "wandb_run_id"
    )
    with pytest.raises(FileExistsError, match="checkpoint-4.*overwrite_output_dir"):
        check_output_dir(run, overwrite=False)
    check_output_dir(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == []
    from dataflex.train.checkpoint import resolve_resume

    assert resolve_resume(run, "auto") is None  # a later `auto` cannot pick up the old run's checkpoint


def test_output_dir_that_is_a_file_is_refused_by_name(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match="trainer.output_dir=.*a_file is a file"):
        check_output_dir(target, overwrite=False)


def test_resume_flag_needs_a_run_folder(tmp_path):
    with pytest.raises(Refused, match="not a DataFlex run folder"):
        expand_resume_flag(["--resume", str(tmp_path)])
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("{}")
    assert expand_resume_flag(["--resume", str(tmp_path), "logger=wandb"]) == [
        f"trainer.output_dir={tmp_path.resolve()}",
        "trainer.resume_from_checkpoint=auto",
        "logger=wandb",
    ]
    with pytest.raises(Refused, match="multirun"):
        expand_resume_flag(["-m", "--resume", str(tmp_path)])


# -- end to end through dataflex-run ---------------------------------------------------------------------

RUN = (*FAST, "trainer.max_steps=8", "trainer.save_steps=3", "trainer.eval_steps=4")


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_resume_is_the_same_run(cli, tmp_path):
    cut = tmp_path / "cut"
    killed = cli(*RUN, f"trainer.output_dir={cut}", check=False, fault="step:5")
    assert killed.returncode == -9
    assert (cut / ".hydra" / "config.yaml").is_file() and (cut / "status.json").is_file()
    assert not (tmp_path / "outputs").exists()  # .hydra/, status.json and the log sit in the output dir
    before = _snapshot(cut / ".hydra") | {"status.json": (cut / "status.json").read_bytes()}

    changed = cli(
        "--resume",
        str(cut),
        "trainer.max_steps=300",
        "trainer.learning_rate=1e-2",
        "model=tiny_moe",
        "logger.plots=false",
        check=False,
    )
    assert changed.returncode != 0 and "Traceback" not in changed.stderr
    for line in (
        "trainer.max_steps: 8 -> 300",
        "trainer.learning_rate: 0.003 -> 0.01",
        "model: 'tiny' -> 'tiny_moe'",
    ):
        assert line in changed.stderr, changed.stderr
    assert "logger.plots" not in changed.stderr  # logger is a safe key
    assert _snapshot(cut / ".hydra") | {"status.json": (cut / "status.json").read_bytes()} == before

    # The new command line's defaults (300 steps) do not apply: the run continues with its saved config.
    cli(f"trainer.output_dir={cut}", "trainer.resume_from_checkpoint=auto", "logger.plots=false")
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["resumed_from"].endswith("checkpoint-3")
    step0 = json.loads((cut / "metrics.jsonl").read_text().splitlines()[0])
    assert step0["step"] == 0 and summary["initial_eval"]["eval/loss"] == step0["eval/loss"]  # not nan
    assert _snapshot(cut / ".hydra") == {k: v for k, v in before.items() if k != "status.json"}
    assert json.loads((cut / "status.json").read_text())["status"] == "completed"
    assert not (tmp_path / "outputs").exists()

    finished = _snapshot(cut)
    again = cli("--resume", str(cut), check=False)
    assert again.returncode != 0 and "completed run" in again.stderr and "nothing to resume" in again.stderr
    assert _snapshot(cut) == finished


@pytest.mark.slow
def test_a_finished_run_is_never_touched(cli, tmp_path):
    done = tmp_path / "done"
    cli(*FAST, f"trainer.output_dir={done}")  # no checkpoints
    finished = _snapshot(done)
    proc = cli(*FAST, f"trainer.output_dir={done}", "trainer.resume_from_checkpoint=auto", check=False)
    assert proc.returncode != 0 and "nothing to resume" in proc.stderr
    proc = cli(*FAST, f"hydra.run.dir={done}", check=False)
    assert proc.returncode != 0 and "already holds a run" in proc.stderr
    assert _snapshot(done) == finished  # .hydra/ and status.json included
    assert not (tmp_path / "outputs").exists()


# -- sweeps ------------------------------------------------------------------------------------------------


def test_sweep_summary_names_the_failed_jobs(tmp_path):
    from dataflex.tracking.sweep_callback import remove_if_empty, sweep_summary

    sweep = tmp_path / "multirun_outputs" / "2026-01-01" / "10-00-00"
    for name, status in [("0_a=1", "completed"), ("1_a=2", "failed"), ("2_a=3", "failed")]:
        (sweep / name / ".hydra").mkdir(parents=True)
        (sweep / name / "status.json").write_text(json.dumps({"status": status}))
    assert sweep_summary(sweep) == f"2 of 3 jobs failed: {sweep / '1_a=2'}, {sweep / '2_a=3'}"
    assert not remove_if_empty(sweep)
    empty = tmp_path / "multirun_outputs" / "2026-01-02" / "11-00-00"
    empty.mkdir(parents=True)
    (empty / "multirun.yaml").write_text("{}")
    assert remove_if_empty(empty) and not empty.parent.exists() and sweep.exists()


@pytest.mark.slow
def test_a_sweep_ends_with_one_line_naming_its_failed_jobs(cli, tmp_path):
    proc = cli("-m", "trainer.learning_rate=1e-3,-1", *FAST, "trainer.max_steps=2", "logger.plots=false")
    output = proc.stdout + proc.stderr
    sweep = next((tmp_path / "multirun_outputs").glob("*/*"))
    failed = sweep / "1_trainer.learning_rate=-1"
    assert f"1 of 2 jobs failed: {failed.resolve()}" in output
    refusal = [line for line in output.splitlines() if "job refused" in line]
    assert len(refusal) == 1 and "trainer.learning_rate must be >= 0" in refusal[0]
    assert "Traceback" not in output
    assert "Traceback" in json.loads((failed / "status.json").read_text())["traceback"]  # kept for debugging

    (tmp_path / "compose_error").mkdir()
    proc = cli("-m", "trainer.learning_rate=1e-3,abc", *FAST, check=False, cwd=tmp_path / "compose_error")
    assert proc.returncode != 0 and "learning_rate" in proc.stderr
    assert not (tmp_path / "compose_error" / "multirun_outputs").exists() or not any(
        (tmp_path / "compose_error" / "multirun_outputs").rglob("*")
    )


# -- checkpoints of another run, the final save ------------------------------------------------------------

TINY = [
    "model.hidden_size=16",
    "model.intermediate_size=32",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
    "data.max_samples=16",
    "trainer.max_eval_samples_per_domain=2",
    "trainer.disable_tqdm=true",
    "logger.plots=false",
    "trainer.per_device_train_batch_size=4",
    "trainer.eval_steps=0",
]


def test_a_checkpoint_of_another_model_or_trainer_says_what_differs(compose, tmp_path):
    from dataflex.run import run

    first = tmp_path / "first"
    cfg = compose(*TINY, "trainer.max_steps=2", "trainer.save_steps=1", f"trainer.output_dir={first}")
    run(cfg, first)
    (first / ".hydra").mkdir()
    (first / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    checkpoint = first / "checkpoint-1"
    bigger = [
        *TINY,
        "model.hidden_size=32",
        "trainer.max_steps=2",
        f"trainer.resume_from_checkpoint={checkpoint}",
    ]
    with pytest.raises(
        ValueError,
        match=r"written with another trainer/component/model config: "
        r"model\.hidden_size: 16 -> 32",
    ):
        run(compose(*bigger, f"trainer.output_dir={tmp_path / 'b'}"), tmp_path / "b")
    mix = [
        *TINY,
        "trainer=dynamic_mix",
        "component=random",
        "trainer.warmup_step=1",
        "trainer.update_step=1",
        "trainer.update_times=1",
        f"trainer.resume_from_checkpoint={checkpoint}",
    ]
    with pytest.raises(ValueError, match=r"trainer\._target_: .*StaticTrainer.* -> .*DynamicMix"):
        run(compose(*mix, f"trainer.output_dir={tmp_path / 'c'}"), tmp_path / "c")
    # Without the run's saved config the load itself says what is wrong (not torch's size-mismatch list).
    (first / ".hydra" / "config.yaml").unlink()
    with pytest.raises(RuntimeError, match="holds a model of another size"):
        run(compose(*bigger, f"trainer.output_dir={tmp_path / 'd'}"), tmp_path / "d")
    with pytest.raises(RuntimeError, match="written by another trainer or component"):
        run(compose(*mix, f"trainer.output_dir={tmp_path / 'e'}"), tmp_path / "e")


def test_the_final_model_is_written_atomically(tmp_path):
    from dataflex.models.tiny import build_tiny_model
    from dataflex.train.saving import save_model_atomic

    bundle = build_tiny_model(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    final = tmp_path / "final_model"
    save_model_atomic(bundle, bundle.model, final)
    before = _snapshot(final)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    bundle.tokenizer.save_pretrained = full_disk  # the weights are written, then the disk is full
    with pytest.raises(OSError, match="No space left"):
        save_model_atomic(bundle, bundle.model, final)
    assert _snapshot(final) == before and not (tmp_path / "final_model.tmp").exists()
