"""Our loop with a real DeepSpeed engine (one CPU process, every parameter sharded, see `deepspeed_cpu_run.py`;
needs `pip install deepspeed`): ZeRO-2/3 with gradient accumulation train exactly like plain data parallel, the
ZeRO-3 final model holds the gathered weights, not the empty shards, LESS selects what it selects without
DeepSpeed, and what DeepSpeed cannot do is refused with a message. Without DeepSpeed: `dist=fsdp` on a CPU is
refused rather than silently trained as plain data parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from distributed_utils import free_port
from helpers import FAST, REPO

pytestmark = pytest.mark.slow

RUN = [o for o in FAST if "per_device_train_batch_size" not in o] + [
    "trainer.per_device_train_batch_size=2", "trainer.gradient_accumulation_steps=2", "trainer.max_steps=3",
    "trainer.lr_scheduler_type=constant", "trainer.eval_steps=0", "trainer.max_grad_norm=0"]


def _deepspeed_run(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "MASTER_PORT": str(free_port())}
    cmd = [sys.executable, str(REPO / "tests" / "deepspeed_cpu_run.py"), *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("dist", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_with_accumulation_trains_like_ddp(cli, tmp_path, dist):
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (pip install deepspeed)")
    plain, ds = tmp_path / "plain", tmp_path / "ds"
    cli(*RUN, f"trainer.output_dir={plain}")
    proc = _deepspeed_run(tmp_path, *RUN, f"dist={dist}", f"trainer.output_dir={ds}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(plain / "final_model" / "model.safetensors"), load_file(ds / "final_model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=3e-5)


def test_less_under_zero3_selects_like_ddp(cli, tmp_path):
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (pip install deepspeed)")
    select = [o for o in RUN if "max_steps" not in o] + [
        "trainer=dynamic_select", "component=less", "trainer.target_domain=target", "trainer.warmup_step=2",
        "trainer.update_step=1", "trainer.update_times=1", "trainer.candidate_pool_size=24", "component.proj_dim=64"]
    plain, ds = tmp_path / "plain", tmp_path / "ds"
    cli(*select, f"trainer.output_dir={plain}")
    proc = _deepspeed_run(tmp_path, *select, "dist=deepspeed_zero3", f"trainer.output_dir={ds}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((d / "selection" / "update_001.json").read_text()) for d in (plain, ds))
    assert a["selected"] == b["selected"]
    torch.testing.assert_close(torch.tensor(b["scores"]), torch.tensor(a["scores"]), rtol=1e-4, atol=1e-6)


WEIGHTING = ["trainer=dynamic_weight", "component=loss", "trainer.warmup_step=1", "trainer.train_step=3"]


@pytest.mark.parametrize("extra,message", [
    (WEIGHTING, "needs trainer.gradient_accumulation_steps=1"),  # ZeRO-3 miscomputes F,F,B,B gradients
    (["trainer.save_steps=1"], "checkpoints (trainer.save_steps, trainer.resume_from_checkpoint) are not supported"),
    (["trainer.nan_policy=skip_step"], "nan_policy=skip_step cannot skip under DeepSpeed"),
], ids=["weighting", "checkpoints", "skip_step"])
def test_zero3_refuses_what_it_cannot_do(tmp_path, extra, message):
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (pip install deepspeed)")
    base = [o for o in RUN if "max_steps" not in o]  # (dynamic_weight counts its own steps)
    proc = _deepspeed_run(tmp_path, *base, *extra, "dist=deepspeed_zero3", f"trainer.output_dir={tmp_path / 'r'}")
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-3000:]


def test_deepspeed_or_fsdp_without_a_gpu_is_refused_not_replaced_by_ddp(cli, tmp_path):
    """accelerate silently trains plain data parallel when it cannot use the plugin (cpu=True)."""
    proc = cli(*RUN, "dist=fsdp", f"trainer.output_dir={tmp_path / 'f'}", check=False)
    assert proc.returncode != 0
    assert "dist.strategy=fsdp was asked for" in proc.stderr and "Use dist=ddp" in proc.stderr, proc.stderr[-3000:]
