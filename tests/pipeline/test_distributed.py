"""Two ranks running a 3-stage pipeline (plus InfoBatch's prune stage) make identical plans (the signals are
sharded and gathered, every decision is broadcast or made from gathered losses; the reorder stage orders each
window by the select stage's scores, `score_source: stage`, which rank 0 broadcasts), and the ledger (rank 0)
is the union of what both ranks trained."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distributed_utils import run_distributed

STAGES = [
    {"kind": "select", "use": "loss", "mode": "filter", "keep_ratio": 0.5, "every": 4},
    {"kind": "prune", "use": "infobatch", "every": 4},
    {"kind": "mix", "use": "odm"},
    {
        "kind": "reorder",
        "component": {"pattern": "saw", "layers": 2, "score_source": "stage", "score_stage": "filter:loss"},
    },
    {"kind": "weight", "use": "loss", "warmup_step": 2, "every": 1},
]


def _train(run_dir: str) -> dict:
    from dataflex.train.loop import TrainingLoop
    from dataflex.train.trainer.pipeline import PipelineTrainer

    from helpers import small_trainer

    seen: list[list[int]] = []
    plans: list[dict] = []
    forward, make_plan = TrainingLoop._forward, PipelineTrainer._make_plan

    def record(self, model, mb, ctx):
        seen.append(mb["sample_ids"].tolist())
        return forward(self, model, mb, ctx)

    def plan(self, done, n):
        made = make_plan(self, done, n)
        plans.append(made.to_json())
        return made

    TrainingLoop._forward, PipelineTrainer._make_plan = record, plan
    trainer = small_trainer(
        PipelineTrainer, run_dir, stages=STAGES, max_steps=8, update_step=4, per_device_train_batch_size=4
    )
    trainer.train()
    prune = trainer.prune
    return {
        "seen": seen,
        "plans": plans,
        "kept": trainer.filters[0].kept.tolist(),
        "factors": prune.weights.tolist(),
        "pruned": prune.pruned,
        "stage_scores": trainer.reorder.stage_scores.values.tolist(),
    }


@pytest.mark.slow
def test_two_ranks_make_identical_plans(tmp_path):
    from dataflex.train.ledger import read_ledger

    r0, r1 = run_distributed(_train, 2, str(tmp_path))
    assert r0["plans"] == r1["plans"] and len(r0["plans"]) == 2
    assert r0["kept"] == r1["kept"] and len(r0["kept"]) == 80
    assert r0["factors"] == r1["factors"] and r0["pruned"] == r1["pruned"] > 0  # from the gathered losses
    scores = np.asarray(r0["stage_scores"])
    assert np.isfinite(scores[r0["kept"]]).all()  # every id the filter kept last has its score
    assert np.array_equal(scores, r1["stage_scores"], equal_nan=True)
    plan = json.loads((tmp_path / "pipeline" / "plan_000004.json").read_text())
    assert plan["pool"] == 80 - r0["pruned"] and plan["provenance"].startswith("filter:loss>prune:infobatch>")
    assert r0["seen"] != r1["seen"]  # each rank trains its own half of every global batch
    global_batches = [a + b for a, b in zip(r0["seen"], r1["seen"])]
    ledger = read_ledger(tmp_path)
    assert ledger["sample_id"].to_pylist() == [i for batch in global_batches for i in batch]
    assert [i for p in r0["plans"] for i in p["ids"]] == ledger["sample_id"].to_pylist()
