"""A 3-stage pipeline (loss filter -> ODM mix -> dynamic saw, with loss weights) killed by SIGKILL after step
5 and resumed from checkpoint-3 (mid-window, with stale cached losses in use) ends at the same weights, with
the same plans and the same ledger, as the uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dataflex.train.ledger import read_ledger

from helpers import FAST, run_in_process

STAGES = (
    "pipeline.stages=[{kind: select, use: loss, mode: filter, keep_ratio: 0.5, every: 4},"
    " {kind: mix, use: odm}, {kind: reorder, component: {pattern: saw, layers: 2}},"
    " {kind: weight, use: loss, warmup_step: 2, every: 1}]"
)
RUN = [
    *(o for o in FAST if not o.startswith("trainer.max_steps")),
    "trainer=pipeline",
    STAGES,
    "trainer.max_steps=8",
    "trainer.update_step=4",
    "trainer.score_max_age=4",
    "trainer.save_steps=3",
    "trainer.learning_rate=1e-2",
]


def _plans(run_dir):
    return [json.loads(p.read_text()) for p in sorted((run_dir / "pipeline").glob("plan_*.json"))]


@pytest.mark.slow
def test_killed_pipeline_resumes_to_the_same_plans_and_weights(cli, compose, tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run_in_process(compose, ref, *RUN)
    killed = cli(*RUN, f"trainer.output_dir={cut}", check=False, fault="step:5")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (cut / "final_model").exists()
    cli(*RUN, f"trainer.output_dir={cut}", "trainer.resume_from_checkpoint=auto")
    assert json.loads((cut / "summary.json").read_text())["resumed_from"].endswith("checkpoint-3")
    a = load_file(ref / "final_model" / "model.safetensors")
    b = load_file(cut / "final_model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert _plans(ref) == _plans(cut) and len(_plans(ref)) == 2
    assert read_ledger(ref).to_pylist() == read_ledger(cut).to_pylist()
