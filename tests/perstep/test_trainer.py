"""trainer=per_step: the ids trained at step t are those chosen at step t, every rank trains rank 0's one
decision, and a resumed run chooses and trains exactly as an uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from perstep.perstep_helpers import build_trainer, train_on_rank, weights

from dataflex.train.perstep.rules import uniform_choice
from dataflex.train.perstep.selectors import GreatsPerStep, MaxLossPerStep

from distributed_utils import run_distributed


def _log(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "selection" / "per_step.jsonl").read_text().splitlines()]


def test_ids_trained_at_step_t_are_those_chosen_at_step_t(tmp_path):
    trainer = build_trainer(str(tmp_path), MaxLossPerStep())
    trainer.train()
    assert sorted(trainer.trained) == [0, 1, 2, 3]
    for t in range(4):
        assert trainer.trained[t] == trainer.kept[t]  # same ids, same order
    rows = _log(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        assert (
            len(r["candidates"]) == 8 and len(set(r["kept"])) == 4 and set(r["kept"]) <= set(r["candidates"])
        )
        assert r["kept"] == trainer.kept[r["step"]]
        assert r["scores"] == sorted(r["scores"], reverse=True)  # max_loss: highest loss first
    # the step's candidates are 8 fresh ids of the epoch order (the static trainer's sampler)
    drawn = [i for r in rows for i in r["candidates"]]
    assert len(set(drawn)) == len(drawn)


def test_refuses_fewer_candidates_than_the_global_batch(tmp_path):
    trainer = build_trainer(str(tmp_path), MaxLossPerStep(), candidate_batch_size=3)
    with pytest.raises(ValueError, match="candidate_batch_size=3"):
        trainer.train()


def test_resume_chooses_and_trains_exactly_as_an_uninterrupted_run(tmp_path):
    full = build_trainer(str(tmp_path / "a"), None, save_steps=2)
    full.selector = GreatsPerStep(full.tokenizer.pad_token_id, eval_data=full.eval_data, val_size=3, seed=3)
    full.train()
    resumed = build_trainer(
        str(tmp_path / "b"), None, resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2")
    )
    resumed.selector = GreatsPerStep(
        resumed.tokenizer.pad_token_id, eval_data=resumed.eval_data, val_size=3, seed=3
    )
    resumed.train()
    assert sorted(resumed.kept) == [2, 3]
    for t in (2, 3):
        assert resumed.kept[t] == full.kept[t]
    a, b = weights(full), weights(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.slow
def test_two_ranks_train_rank_zeros_one_decision(tmp_path):
    biased = run_distributed(train_on_rank, 2, str(tmp_path / "biased"), "biased")
    rows = _log(tmp_path / "biased")
    for t in range(3):
        expected = [rows[t]["candidates"][p] for p in uniform_choice(8, 4, seed=100, step=t).indices]
        for rank in (0, 1):  # rank 1's own selector wanted other ids (seed 101): rank 0's were trained
            assert biased[rank]["kept"][t] == expected
            assert biased[rank]["trained"][t] == expected
    assert any(
        [rows[t]["candidates"][p] for p in uniform_choice(8, 4, seed=101, step=t).indices] != rows[t]["kept"]
        for t in range(3)
    )
    # max_loss is separable: each rank scores 4 of the 8 candidates, the losses are all-gathered
    real = run_distributed(train_on_rank, 2, str(tmp_path / "real"), "max_loss")
    assert real[0]["kept"] == real[1]["kept"] and real[0]["trained"] == real[0]["kept"]
    one = build_trainer(str(tmp_path / "one"), MaxLossPerStep(), per_device_train_batch_size=4, max_steps=3)
    one.train()  # one process, the same global batch: the same choices as the two ranks' shared scores
    assert real[0]["kept"] == one.kept
    for k, v in real[0]["weights"].items():
        np.testing.assert_array_equal(v, real[1]["weights"][k])
    rows = _log(tmp_path / "real")
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in rows)


def test_uniform_reads_no_candidate_rows(tmp_path):
    from dataflex.train.perstep.selectors import UniformPerStep

    trainer = build_trainer(str(tmp_path), UniformPerStep(seed=5))
    reads = []
    data = trainer.train_data
    original = type(data).__getitem__

    class Counting(type(data)):
        def __getitem__(self, i):
            reads.append(int(i))
            return original(self, i)

    data.__class__ = Counting
    trainer.train()
    assert len(reads) == 4 * 4  # only the 4 kept rows of each of the 4 steps are read (by the loop)
    for t in range(4):
        assert trainer.trained[t] == trainer.kept[t]


def _grads_per_step(trainer) -> list[torch.Tensor]:
    """The flattened gradient the optimizer steps with, step by step."""
    seen: list[torch.Tensor] = []
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    def hook(optimizer, args, kwargs):
        seen.append(torch.cat([p.grad.reshape(-1) for p in params]).double().clone())

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(hook)
    try:
        trainer.train()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize(
    "name,kind,extra",
    [
        ("greats", "full", {}),
        ("grad_norm", "lora", {}),
        ("greats", "lora", {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}),
        ("grad_norm", "full", {"loss_reduction": "sample"}),
    ],
)
def test_update_from_the_candidate_pass_equals_the_plain_steps_gradient(tmp_path, name, kind, extra):
    """grad_norm / greats: the kept rows' gradient assembled from the candidate pass (no second forward +
    backward) equals the loop's own forward + backward of them (reuse_candidate_pass=false), step by step."""
    from dataflex.train.perstep.selectors import GradNormPerStep

    def run(folder: str, reuse: bool):
        trainer = build_trainer(
            str(tmp_path / folder), None, kind=kind, max_steps=3, reuse_candidate_pass=reuse, **extra
        )
        if name == "greats":
            pad = trainer.tokenizer.pad_token_id
            trainer.selector = GreatsPerStep(pad, eval_data=trainer.eval_data, val_size=3, seed=3)
        else:
            trainer.selector = GradNormPerStep()
        if kind == "lora":  # LoRA B starts at zero: make every adapter's gradient non-trivial
            with torch.no_grad():
                for n, p in trainer.model.named_parameters():
                    if "lora_B" in n:
                        p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(n)))
        return trainer, _grads_per_step(trainer)

    reused, with_reuse = run("reuse", True)
    plain, without = run("plain", False)
    assert reused._reuse_blocker is None and plain._reuse_blocker == "trainer.reuse_candidate_pass=false"
    assert reused.kept == plain.kept and reused.trained == reused.kept
    assert len(with_reuse) == len(without) == 3
    for ours, theirs in zip(with_reuse, without):
        assert float((ours - theirs).norm() / theirs.norm()) < 1e-5


def test_the_candidate_pass_is_not_reused_where_the_training_forward_differs(tmp_path):
    from dataflex.train.perstep.reuse import blocker
    from dataflex.train.perstep.selectors import GradNormPerStep

    trainer = build_trainer(str(tmp_path), GradNormPerStep(), max_steps=1)
    trainer.model.config.attention_dropout = 0.1
    trainer.train()
    assert trainer._reuse_blocker == "active dropout: model config attention_dropout=0.1"
    assert trainer.trained[0] == trainer.kept[0]  # trained by the loop's own forward + backward instead
    lora = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.05))

    class Accel:
        num_processes, mixed_precision = 1, "no"
        distributed_type = type("T", (), {"name": "NO"})()

    assert blocker(lora, Accel(), pack_capacity=None) == "active dropout: 1 (p=0.05)"
    assert blocker(torch.nn.Linear(2, 2), Accel(), pack_capacity=128).startswith("data.packing")
    Accel.mixed_precision = "bf16"
    assert blocker(torch.nn.Linear(2, 2), Accel(), pack_capacity=None).startswith("mixed precision bf16")
