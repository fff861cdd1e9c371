"""Our loop with a real DeepSpeed engine (one CPU process, every parameter sharded, see
`deepspeed_cpu_run.py`; needs `pip install deepspeed`): ZeRO-2/3 with gradient accumulation train exactly like
plain data parallel, the ZeRO-3 final model holds the gathered weights, not the empty shards, LESS selects
what it selects without DeepSpeed, a SIGKILLed run resumed from its DeepSpeed checkpoint ends exactly like an
uninterrupted one, and what DeepSpeed cannot do is refused with a message. Without DeepSpeed: `dist=fsdp` on a
CPU is refused rather than silently trained as plain data parallel (so FSDP's refusal of checkpoints cannot be
reached on a CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distributed_utils import free_port
from helpers import FAST, REPO, run_in_process

pytestmark = pytest.mark.slow

RUN = [o for o in FAST if "per_device_train_batch_size" not in o] + [
    "trainer.per_device_train_batch_size=2",
    "trainer.gradient_accumulation_steps=2",
    "trainer.max_steps=3",
    "trainer.lr_scheduler_type=constant",
    "trainer.eval_steps=0",
    "trainer.max_grad_norm=0",
]


def _deepspeed_run(tmp_path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "MASTER_PORT": str(free_port()),
        **(env or {}),
    }
    cmd = [sys.executable, str(REPO / "tests" / "deepspeed_cpu_run.py"), *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("dist", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_with_accumulation_trains_like_ddp(compose, tmp_path, dist):
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (pip install deepspeed)")
    plain, ds = tmp_path / "plain", tmp_path / "ds"
    run_in_process(compose, plain, *RUN)
    proc = _deepspeed_run(tmp_path, *RUN, f"dist={dist}", f"trainer.output_dir={ds}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (
        load_file(plain / "final_model" / "model.safetensors"),
        load_file(ds / "final_model" / "model.safetensors"),
    )
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=3e-5)


def test_less_under_zero3_selects_like_ddp(compose, tmp_path):
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (pip install deepspeed)")
    select = [o for o in RUN if "max_steps" not in o] + [
        "trainer=dynamic_select",
        "component=less",
        "trainer.target_domain=target",
        "trainer.warmup_step=2",
        "trainer.update_step=1",
        "trainer.update_times=1",
        "trainer.candidate_pool_size=24",
        "component.proj_dim=64",
    ]
    plain, ds = tmp_path / "plain", tmp_path / "ds"
    run_in_process(compose, plain, *select)
    proc = _deepspeed_run(tmp_path, *select, "dist=deepspeed_zero3", f"trainer.output_dir={ds}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((d / "selection" / "update_001.json").read_text()) for d in (plain, ds))
    assert a["selected"] == b["selected"]
    torch.testing.assert_close(torch.tensor(b["scores"]), torch.tensor(a["scores"]), rtol=1e-4, atol=1e-6)


WEIGHTING = ["trainer=dynamic_weight", "component=loss", "trainer.warmup_step=1", "trainer.train_step=3"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (WEIGHTING, "needs trainer.gradient_accumulation_steps=1"),  # ZeRO-3 miscomputes F,F,B,B gradients
        (["trainer.nan_policy=skip_step"], "nan_policy=skip_step cannot skip under DeepSpeed"),
    ],
    ids=["weighting", "skip_step"],
)
def test_zero3_refuses_what_it_cannot_do(tmp_path, extra, message):
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (pip install deepspeed)")
    base = [o for o in RUN if "max_steps" not in o]  # (dynamic_weight counts its own steps)
    proc = _deepspeed_run(
        tmp_path, *base, *extra, "dist=deepspeed_zero3", f"trainer.output_dir={tmp_path / 'r'}"
    )
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-3000:]


def test_deepspeed_or_fsdp_without_a_gpu_is_refused_not_replaced_by_ddp(cli, tmp_path):
    """accelerate silently trains plain data parallel when it cannot use the plugin (cpu=True)."""
    proc = cli(*RUN, "dist=fsdp", f"trainer.output_dir={tmp_path / 'f'}", check=False)
    assert proc.returncode != 0
    assert "dist.strategy=fsdp was asked for" in proc.stderr and "Use dist=ddp" in proc.stderr, proc.stderr[
        -3000:
    ]


# Checkpoints: 6 steps with the (non-constant) default LR schedule, a checkpoint every 2 steps.
CKPT = [o for o in RUN if "max_steps" not in o and "lr_scheduler_type" not in o] + [
    "trainer.max_steps=6",
    "trainer.save_steps=2",
    "trainer.learning_rate=1e-2",
]


def _killed_then_resumed(tmp_path, overrides: list[str], fault: str) -> tuple[Path, Path]:
    """An uninterrupted run (ref) and one SIGKILLed at `fault` then resumed with `auto` (cut)."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    proc = _deepspeed_run(tmp_path, *overrides, f"trainer.output_dir={ref}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = _deepspeed_run(tmp_path, *overrides, f"trainer.output_dir={cut}", env={"DATAFLEX_FAULT": fault})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (cut / "final_model").exists()
    if fault.startswith("save"):  # the engine had written its shards into the .tmp folder: never resumed from
        step = fault.split(":")[1]
        assert (cut / f"checkpoint-{step}.tmp" / "deepspeed").is_dir() and not (
            cut / f"checkpoint-{step}"
        ).exists()
    proc = _deepspeed_run(
        tmp_path, *overrides, f"trainer.output_dir={cut}", "trainer.resume_from_checkpoint=auto"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ref, cut


def _assert_same_final_weights(ref: Path, cut: Path) -> None:
    a, b = (load_file(d / "final_model" / "model.safetensors") for d in (ref, cut))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "dist,fault,resumed_at",
    [("deepspeed_zero2", "step:5", 4), ("deepspeed_zero3", "save:4", 2)],
    ids=["zero2", "zero3-killed-while-saving"],  # ZeRO-3 killed mid-step: the dynamic_mix test below
)
def test_deepspeed_killed_run_resumes_to_the_same_result(tmp_path, dist, fault, resumed_at):
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (pip install deepspeed)")
    ref, cut = _killed_then_resumed(tmp_path, [*CKPT, f"dist={dist}"], fault)
    _assert_same_run(ref, cut, resumed_at)


def _assert_same_run(ref: Path, cut: Path, resumed_at: int) -> None:
    """Resumed from checkpoint-`resumed_at`; same final weights, learning rates and logged losses."""
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["resumed_from"].endswith(f"checkpoint-{resumed_at}")
    _assert_same_final_weights(ref, cut)
    metrics = [[json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (ref, cut)]
    assert [(r["step"], r.get("lr")) for r in metrics[0]] == [(r["step"], r.get("lr")) for r in metrics[1]]
    logged = [(a, b) for a, b in zip(*metrics) if "loss" in a or "loss" in b]
    assert logged and all("loss" in a and "loss" in b for a, b in logged)
    for a, b in logged:
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6), a["step"]


def test_deepspeed_checkpoint_holds_the_model_for_transformers(tmp_path):
    """The HF-format model in a ZeRO-3 checkpoint is what DeepSpeed's own shards hold (gathered, not the
    empty shards) and loads with plain transformers."""
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (pip install deepspeed)")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoModelForCausalLM

    out = tmp_path / "r"
    short = [o for o in CKPT if "max_steps" not in o] + [
        "trainer.max_steps=3",
        "trainer.save_final_model=false",
    ]
    proc = _deepspeed_run(tmp_path, *short, "dist=deepspeed_zero3", f"trainer.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoint-2"), tag="deepspeed")
    loaded = AutoModelForCausalLM.from_pretrained(out / "checkpoint-2").state_dict()
    assert shards.keys() <= loaded.keys()
    for k, v in shards.items():
        assert v.abs().sum() > 0, k
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0)


def test_a_ddp_checkpoint_is_not_resumed_under_deepspeed(cli, tmp_path):
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (pip install deepspeed)")
    out = tmp_path / "r"
    cli(*CKPT, f"trainer.output_dir={out}")
    # Make it look killed after its checkpoints (a completed run is refused before anything else is checked).
    shutil.rmtree(out / "final_model")
    (out / "summary.json").unlink()
    (out / "status.json").write_text(json.dumps({"status": "running"}))
    proc = _deepspeed_run(
        tmp_path,
        *CKPT,
        "dist=deepspeed_zero2",
        f"trainer.output_dir={out}",
        "trainer.resume_from_checkpoint=auto",
    )
    # Refused before loading, by the resume-is-the-same-run check that names the changed key.
    assert proc.returncode != 0 and "dist: " in proc.stderr and "resumed from" not in proc.stderr, (
        proc.stderr[-3000:]
    )


def test_deepspeed_killed_dynamic_mix_resumes_to_the_same_proportions(tmp_path):
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (pip install deepspeed)")
    odm = [o for o in CKPT if "max_steps" not in o] + [
        "trainer=dynamic_mix",
        "component=odm",
        "trainer.warmup_step=2",
        "trainer.update_step=2",
        "trainer.update_times=2",
        "dist=deepspeed_zero3",
    ]
    ref, cut = _killed_then_resumed(tmp_path, odm, "step:5")
    _assert_same_run(ref, cut, resumed_at=4)

    def proportions(run_dir: Path) -> list[dict]:
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [
            {k: v for k, v in r.items() if k.startswith("mixture/") and "time" not in k} | {"step": r["step"]}
            for r in rows
        ]

    a, b = proportions(ref), proportions(cut)
    assert [r["step"] for r in a] == [r["step"] for r in b] and any(len(r) > 1 for r in a)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-7), (x["step"], key)
