"""Two ranks running trainer=dynamic_reorder (dynamic, loss scores) plan the same order: the scores are
computed sharded and gathered, so both ranks hold the same plan, and the ledger (rank 0) is the union of
what both ranks trained."""

from __future__ import annotations

import pytest

from distributed_utils import run_distributed


def _train(run_dir: str) -> dict:
    from dataflex.train.loop import TrainingLoop
    from dataflex.train.trainer.dynamic_reorder import DynamicReorderTrainer

    from helpers import small_trainer

    seen: list[list[int]] = []
    original = TrainingLoop._forward

    def record(self, model, mb, ctx):
        seen.append(mb["sample_ids"].tolist())
        return original(self, model, mb, ctx)

    TrainingLoop._forward = record
    trainer = small_trainer(
        DynamicReorderTrainer,
        run_dir,
        max_steps=14,
        per_device_train_batch_size=8,
        pattern="saw",
        sections=3,
        folding_ratio=0.1,
        layers=2,
        window=4,
        update_step=3,
    )
    trainer.train()
    state = trainer.sampler.state_dict()
    return {"seen": seen, "order": state["order"].tolist(), "epoch": state["epoch"], "pos": state["pos"]}


@pytest.mark.slow
def test_two_ranks_plan_the_same_order(tmp_path):
    from dataflex.train.ledger import read_ledger

    r0, r1 = run_distributed(_train, 2, str(tmp_path))
    assert (r0["order"], r0["epoch"], r0["pos"]) == (r1["order"], r1["epoch"], r1["pos"])
    assert r0["epoch"] == 1  # 14 steps x 16 crossed into the second epoch (160 items): re-scored there too
    global_batches = [a + b for a, b in zip(r0["seen"], r1["seen"])]
    ledger = read_ledger(tmp_path)
    assert ledger["sample_id"].to_pylist() == [i for batch in global_batches for i in batch]
    first_epoch = ledger["sample_id"].to_pylist()[:160]
    assert sorted(first_epoch) == list(range(160))
