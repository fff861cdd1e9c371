"""Checkpoints resume exactly (weights, losses, decisions, the data ledger), survive a SIGKILL (also during a
save), and never clobber a run."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dataflex.train.checkpoint import from_safe, rng_state, set_rng_state, to_safe

from helpers import FAST, run_in_process


def test_safe_roundtrip_keeps_numpy_types():
    state = {"a": np.arange(5, dtype=np.uint32), "b": [np.float32(1.5), (np.ones((2, 2)), "x")], "c": 3}
    back = from_safe(torch.load(_save_load(to_safe(state)), weights_only=True))
    assert back["a"].dtype == np.uint32 and back["a"].tolist() == [0, 1, 2, 3, 4]
    assert back["b"][0] == 1.5 and back["b"][1][0].shape == (2, 2) and back["c"] == 3


def _save_load(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_rng_state_roundtrip():
    state = torch.load(_save_load(rng_state()), weights_only=True)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_sharded_model_weights_load_back(tmp_path):
    """A model `save_pretrained` split into shards (large models) loads back whole, tied head included."""
    from dataflex.models.tiny import build_tiny_model
    from dataflex.train.checkpoint import load_model_weights

    saved = build_tiny_model(seed=1).model
    saved.save_pretrained(tmp_path, max_shard_size="300KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    fresh = build_tiny_model(seed=2).model
    assert not torch.equal(fresh.lm_head.weight, saved.lm_head.weight)
    load_model_weights(fresh, tmp_path)
    _assert_same_weights(fresh.state_dict(), saved.state_dict())
    assert fresh.lm_head.weight.data_ptr() == fresh.model.embed_tokens.weight.data_ptr()


RUN = (
    *FAST,
    "trainer.max_steps=8",
    "trainer.save_steps=3",
    "trainer.eval_steps=4",
    "trainer.learning_rate=1e-2",
)


def _final_weights(run_dir):
    return load_file(run_dir / "final_model" / "model.safetensors")


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("fault,ledger_steps", [("step:5", 3), ("save:6", 6)])
def test_killed_run_resumes_to_the_same_result(cli, compose, tmp_path, fault, ledger_steps):
    """Same final weights, logged losses and data ledger. The ledger: step:5 dies with steps 4-5 still
    buffered, save:6 after the ledger flushed step 6 but before checkpoint-6 exists; either way the resume
    (from checkpoint-3) rewrites it to the reference."""
    from dataflex.train.ledger import read_ledger

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run_in_process(compose, ref, *RUN)
    killed = cli(*RUN, f"trainer.output_dir={cut}", check=False, fault=fault)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (cut / "final_model").exists()
    if fault.startswith("save"):
        assert (cut / "checkpoint-6.tmp").is_dir() and not (cut / "checkpoint-6").exists()
    assert sorted(set(read_ledger(cut)["step"].to_pylist())) == list(range(1, ledger_steps + 1))
    proc = cli(*RUN, f"trainer.output_dir={cut}", "trainer.resume_from_checkpoint=auto")
    a, b = read_ledger(ref), read_ledger(cut)
    assert a.num_rows == 8 * 4 and a["step"].to_pylist() == [s for s in range(1, 9) for _ in range(4)]
    assert a.to_pylist() == b.to_pylist()
    resumed_from = json.loads((cut / "summary.json").read_text())["resumed_from"]
    assert resumed_from.endswith("checkpoint-3")
    assert "resumed from" in proc.stdout + proc.stderr
    _assert_same_weights(_final_weights(ref), _final_weights(cut))
    ref_m, cut_m = _metrics(ref), _metrics(cut)
    assert [r["step"] for r in ref_m] == [r["step"] for r in cut_m]
    for a, b in zip(ref_m, cut_m):
        for key in a:
            if key.startswith("eval/") or key == "loss":
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)


# Dynamic trainers: 8 steps, a checkpoint at 3, SIGKILL at 5, resume; decisions must match too.
DYNAMIC = {
    "mix_odm": [
        "trainer=dynamic_mix",
        "component=odm",
        "trainer.warmup_step=2",
        "trainer.update_step=2",
        "trainer.update_times=3",
    ],
    "select_loss": [
        "trainer=dynamic_select",
        "component=loss",
        "trainer.warmup_step=2",
        "trainer.update_step=2",
        "trainer.update_times=3",
    ],
    "select_less": [
        "trainer=dynamic_select",
        "component=less",
        "trainer.target_domain=target",
        "trainer.warmup_step=2",
        "trainer.update_step=2",
        "trainer.update_times=3",
        "trainer.candidate_pool_size=48",
    ],
    "weight_loss": [
        "trainer=dynamic_weight",
        "component=loss",
        "trainer.warmup_step=2",
        "trainer.train_step=8",
    ],
}
DYN_RUN = [o for o in RUN if not o.startswith("trainer.max_steps")]


def _decisions(run_dir):
    """What the strategy decided: proportions, selected ids, weights (as logged) and selection files."""
    keep = ("mixture/", "select/", "weight/")
    logged = [
        {k: v for k, v in r.items() if k.startswith(keep) and "time" not in k} | {"step": r["step"]}
        for r in _metrics(run_dir)
    ]
    selections = {
        p.name: json.loads(p.read_text()).get("selected") for p in sorted(run_dir.glob("selection/*.json"))
    }
    return logged, selections


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(DYNAMIC))
def test_killed_dynamic_run_resumes_to_the_same_decisions(cli, compose, tmp_path, case):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run_in_process(compose, ref, *DYN_RUN, *DYNAMIC[case])
    killed = cli(*DYN_RUN, *DYNAMIC[case], f"trainer.output_dir={cut}", check=False, fault="step:5")
    assert killed.returncode == -9, killed.stderr[-2000:]
    cli(*DYN_RUN, *DYNAMIC[case], f"trainer.output_dir={cut}", "trainer.resume_from_checkpoint=auto")
    _assert_same_weights(_final_weights(ref), _final_weights(cut))
    (ref_logged, ref_sel), (cut_logged, cut_sel) = _decisions(ref), _decisions(cut)
    assert ref_sel == cut_sel
    assert [r["step"] for r in ref_logged] == [r["step"] for r in cut_logged]
    for a, b in zip(ref_logged, cut_logged):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)


def test_resume_path_must_be_a_checkpoint(compose, tmp_path):
    from dataflex.train.checkpoint import resolve_resume

    with pytest.raises(FileNotFoundError, match="resume_from_checkpoint"):
        resolve_resume(tmp_path, str(tmp_path))
    assert resolve_resume(tmp_path, "auto") is None
