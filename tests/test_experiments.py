"""Every experiment preset (conf/experiment/*.yaml) composes, and runs end to end at tiny scale.

The slow tests launch the real `dataflex-run -m` (Hydra multirun, job dirs, status.json) through this file
run as a script: `python tests/test_experiments.py -m experiment=<name>`. The only difference from the
console script is `shrink`, which cuts each job's composed config to a few steps of a 1-layer model
before it runs, whatever trainer and schedule the preset chose (a preset's own schedule keys differ per
trainer and per job, so fixed command-line overrides cannot fit them all).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "conf" / "experiment"
PRESETS = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))

TINY_MODEL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}
TINY_TRAINER = {
    "logging_steps": 1,
    "eval_steps": 2,
    "max_eval_samples_per_domain": 8,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "save_steps": 0,
    "disable_tqdm": True,
}


def shrink(cfg) -> None:
    """Tiny steps and model for whatever the job composed; only keys that the job's schemas have."""
    from omegaconf import open_dict

    with open_dict(cfg):
        trainer = cfg.trainer
        for key, value in TINY_TRAINER.items():
            if key in trainer:
                trainer[key] = value
        if "warmup_step" in trainer:
            trainer.warmup_step = min(trainer.warmup_step, 1)
        if "update_times" in trainer:
            trainer.update_step, trainer.update_times = 1, 2
        if trainer.get("train_step") is not None:  # a fixed-length schedule (e.g. static_mix)
            trainer.train_step = min(trainer.train_step, 3)
        elif "update_times" not in trainer:  # no schedule of its own: plain max_steps
            trainer.max_steps, trainer.num_train_epochs = 3, 0
        for key, value in TINY_MODEL.items():
            if key in cfg.model:
                cfg.model[key] = value
        if "max_samples" in cfg.data:
            cfg.data.max_samples = min(cfg.data.max_samples or 64, 64)


def tiny_main(argv: list[str]) -> None:
    """`dataflex-run <argv>` with every job shrunk (see the module docstring)."""
    import dataflex.cli
    import dataflex.run

    real_run = dataflex.run.run

    def tiny_run(cfg, run_dir):
        shrink(cfg)
        return real_run(cfg, run_dir)

    dataflex.run.run = tiny_run
    sys.argv = ["dataflex-run", *argv]
    dataflex.cli.main()


def _sweep_params(compose, preset: str) -> dict[str, str]:
    cfg = compose(f"experiment={preset}", return_hydra_config=True)
    return dict(cfg.hydra.sweeper.params or {})


def _expand(params: dict[str, str]) -> list[list[str]]:
    """The jobs of a basic sweep: the cartesian product of each key's values, as override lists."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    axes = []
    for key, values in params.items():
        (override,) = parser.parse_overrides([f"{key}={values}"])
        choices = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(values)]
        axes.append([f"{key}={v}" for v in choices])
    return [list(job) for job in itertools.product(*axes)]


def test_presets_exist():
    if not PRESETS:
        pytest.skip("no experiment presets in conf/experiment yet")
    assert all(p.replace("_", "").isalnum() for p in PRESETS), PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_starts_with_package_and_command(preset):
    lines = (EXPERIMENTS / f"{preset}.yaml").read_text().splitlines()
    assert lines[0].strip() == "# @package _global_", f"conf/experiment/{preset}.yaml must start with it"
    header = "\n".join(line for line in lines[1:6] if line.startswith("#"))
    assert f"experiment={preset}" in header, f"conf/experiment/{preset}.yaml: give the command in its header"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_is_indexed_in_experiments_readme(preset):
    assert f"`{preset}`" in (REPO / "experiments" / "README.md").read_text(), (
        f"add conf/experiment/{preset}.yaml to the study table of experiments/README.md"
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_every_job_of_a_preset_composes(compose, preset):
    jobs = _expand(_sweep_params(compose, preset))
    for job in jobs:
        cfg = compose(f"experiment={preset}", *job)
        assert cfg.trainer._target_ and cfg.model._target_, job


def _run_sweep(tmp_path: Path, *args: str, timeout: int = 1200) -> Path:
    import subprocess

    proc = subprocess.run(
        [sys.executable, __file__, "-m", *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    sweeps = list((tmp_path / "multirun_outputs").glob("*/*"))
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def _assert_all_completed(sweep: Path, expected_jobs: int) -> None:
    from dataflex.tracking.sweep import collect_jobs

    jobs = collect_jobs([sweep])
    assert len(jobs) == expected_jobs, [j.label for j in jobs]
    failed = {j.label: j.error or j.status for j in jobs if j.status != "completed"}
    assert not failed, failed
    assert all(j.domain_losses for j in jobs), "every job ends with a per-domain evaluation"


@pytest.mark.slow
def test_presets_without_a_sweep_run_in_one_multirun(compose, tmp_path):
    """`-m experiment=a,b,...` over the presets that have no sweep of their own, in name order (so chained
    presets such as doremi_step1..3 find their predecessor's output). Presets with a sweep are not part
    of it: their sweep params do not apply when `experiment` itself is swept (as in `experiment=glob(*)`),
    and some are only complete with them (e.g. the component comes from the sweep); they run below."""
    plain = [p for p in PRESETS if not _sweep_params(compose, p)]
    if not plain:
        pytest.skip("no experiment presets without their own sweep")
    sweep = _run_sweep(tmp_path, f"experiment={','.join(plain)}")
    _assert_all_completed(sweep, len(plain))


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_sweep_runs(compose, tmp_path, preset):
    """The preset's own sweep (hydra.sweeper.params), every job at tiny scale; then the report reads it."""
    params = _sweep_params(compose, preset)
    if not params:
        pytest.skip(
            f"{preset} has no sweep of its own (see test_presets_without_a_sweep_run_in_one_multirun)"
        )
    sweep = _run_sweep(tmp_path, f"experiment={preset}")
    _assert_all_completed(sweep, len(_expand(params)))
    from dataflex.report import report

    assert report([sweep], plots=False).is_file()


if __name__ == "__main__":
    tiny_main(sys.argv[1:])
