"""InfoBatch as a pipeline stage (`{kind: prune, use: infobatch}`): the decision is InfoBatch's epoch plan
(the core trainer=infobatch uses) over the pool's trained ids, the kept below-mean ids carry 1 / keep ratio
in the loss and the ledger, it stacks with a mix and a weight stage, and a resumed run trains the same ids to
the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dataflex.config.infobatch import InfoBatchPruning
from dataflex.config.pipeline import parse_stages
from dataflex.train.ledger import read_ledger
from dataflex.train.loop import TrainingLoop
from dataflex.train.pipeline.stages import PruneStage
from dataflex.train.selector.infobatch import InfoBatchSettings, epoch_plan
from dataflex.train.trainer.pipeline import PipelineTrainer

from helpers import resumed_small_trainer, small_trainer

PRUNE = {"kind": "prune", "use": "infobatch", "every": 2}


def test_prune_decisions_on_hand_numbers():
    spec = parse_stages([{**PRUNE, "every": 4}], update_step=2)[0]
    assert spec.name == "prune:infobatch" and not spec.budget
    stage = PruneStage(spec, InfoBatchPruning(prune_ratio=0.5, delta=0.5), num_items=8, seed=0, total=20)
    pool = np.arange(8)
    assert stage.apply(0, pool).tolist() == list(range(8))  # nothing trained yet: nothing to judge
    stage.observe(np.arange(6), np.array([1.0, 2.0, 3.0, 6.0, 8.0, np.nan]))
    assert stage.apply(2, pool).tolist() == list(range(8))  # not due (every 4), same pool
    # Boundary 4: trained ids 0-4 (5's loss was NaN: untrained), mean (1+2+3+6+8)/5 = 4: ids 0, 1, 2 are well
    # learned, int(0.5 x 3) = 1 of them is kept (weight 1 / 0.5 = 2), ids 3-7 all stay with weight 1.
    kept = stage.apply(4, pool)
    keeper = sorted(set(kept.tolist()) & {0, 1, 2})
    assert len(kept) == 6 and set(kept.tolist()) >= {3, 4, 5, 6, 7} and len(keeper) == 1
    assert stage.factors(pool).tolist() == [2.0 if i == keeper[0] else 1.0 for i in range(8)]
    ids, _ = epoch_plan(
        np.array([1.0, 2.0, 3.0, 6.0, 8.0]), 1, InfoBatchSettings(prune_ratio=0.5, seed=0), anneal=False
    )
    assert sorted(ids.tolist()) == sorted([3, 4, *keeper])  # InfoBatch's core, second decision (round 1)
    assert stage.pruned == 2
    # Boundary 6 (not due): a filter upstream dropped id 3, the pool is judged anew: mean of 1, 2, 3, 8 = 3.5
    stage.observe(np.array([3]), np.array([0.5]))  # (id 3's new loss; it is not in the pool any more)
    kept = stage.apply(6, np.array([0, 1, 2, 4, 5, 6, 7]))
    assert len(set(kept.tolist()) & {0, 1, 2}) == 1 and {4, 5, 6, 7} <= set(kept.tolist())
    # Boundary 10 = 0.5 x 20 steps (not due): the annealing, everything kept with weight 1, also later.
    assert stage.apply(10, pool).tolist() == list(range(8)) and set(stage.factors(pool)) == {1.0}
    assert stage.apply(12, pool).tolist() == list(range(8)) and stage.pruned == 0


@pytest.fixture
def trained(monkeypatch):
    """Per step (1-based): the (sample id, token-mean loss) pairs the loop trained, and the loss it
    back-propagated (summed over the micro-batches)."""
    seen: dict[int, list[tuple[int, float]]] = {}
    backed: dict[int, float] = {}
    forward, loss_of = TrainingLoop._forward, PipelineTrainer.compute_loss

    def record(self, model, mb, ctx):
        losses = forward(self, model, mb, ctx)
        seen.setdefault(ctx.step + 1, []).extend(zip(mb["sample_ids"].tolist(), losses.mean.tolist()))
        return losses

    def record_loss(self, losses, batch, ctx):
        loss = loss_of(self, losses, batch, ctx)
        backed[ctx.step + 1] = backed.get(ctx.step + 1, 0.0) + float(loss.detach())
        return loss

    monkeypatch.setattr(TrainingLoop, "_forward", record)
    monkeypatch.setattr(PipelineTrainer, "compute_loss", record_loss)
    return seen, backed


def test_prune_stage_trains_infobatch_plans_with_its_loss(tmp_path, trained):
    seen, backed = trained
    trainer = small_trainer(
        PipelineTrainer, tmp_path, stages=[PRUNE], update_step=2, max_steps=6, per_device_train_batch_size=16
    )
    trainer.train()
    # The decision at boundary 2 is InfoBatch's plan (round 1: boundary 0 was the first) of the losses of
    # the 32 ids trained in steps 1-2, the mean over those; the window after it comes from the kept pool.
    scores = {i: loss for s in (1, 2) for i, loss in seen[s]}
    ids = np.array(sorted(scores))
    pos, weights = epoch_plan(
        np.array([scores[i] for i in ids]), 1, InfoBatchSettings(prune_ratio=0.5, seed=42), anneal=False
    )
    below = int((np.array([scores[i] for i in ids]) < np.mean(list(scores.values()))).sum())
    pruned = set(ids.tolist()) - set(ids[pos].tolist())
    assert len(pruned) == below - below // 2 > 0
    plan = json.loads((tmp_path / "pipeline" / "plan_000002.json").read_text())
    assert plan["pool"] == 160 - len(pruned) and plan["provenance"] == "prune:infobatch>uniform"
    assert not pruned & set(plan["ids"])
    upweighted = {int(i) for i, w in zip(ids, weights) if w == 2.0}
    ledger = read_ledger(tmp_path).to_pylist()
    for r in ledger:
        if r["step"] in (3, 4):
            assert r["weight"] == (2.0 if r["sample_id"] in upweighted else 1.0), r
    assert any(r["weight"] == 2.0 for r in ledger) and {r["weight"] for r in ledger} <= {1.0, 2.0}
    # The back-propagated loss: InfoBatch's mean over the batch of factor x loss (trainer=infobatch's form).
    w = {(r["step"], r["position"]): r["weight"] for r in ledger}
    for step in range(1, 7):
        expected = np.mean([w[step, k] * loss for k, (_, loss) in enumerate(seen[step])])
        assert backed[step] == pytest.approx(expected, rel=1e-5)


def test_prune_stacks_with_a_mix_and_a_weight_stage(tmp_path, trained, monkeypatch):
    factors: dict[int, np.ndarray] = {}
    original = PipelineTrainer.next_indices

    def record(self, step, n):
        ids = original(self, step, n)
        factors[step + 1] = self._factors[step][ids]
        return ids

    monkeypatch.setattr(PipelineTrainer, "next_indices", record)
    stages = [PRUNE, {"kind": "mix", "use": "random"}, {"kind": "weight", "use": "loss", "every": 1}]
    trainer = small_trainer(
        PipelineTrainer, tmp_path, stages=stages, update_step=2, max_steps=6, per_device_train_batch_size=16
    )
    trainer.train()
    ledger = read_ledger(tmp_path).to_pylist()
    assert {r["stage"] for r in ledger} == {"prune:infobatch>mix:random+weight:loss"}
    assert trainer.prune is not None and trainer.prune.rounds == 3
    for step in range(1, 7):
        rows = [r for r in ledger if r["step"] == step]
        got = np.asarray([r["weight"] for r in rows], dtype=np.float64)
        # ledger weight = N x (the loss weighter's normalised weight) x InfoBatch's factor of the id
        plain = got / factors[step]
        assert plain.sum() == pytest.approx(len(rows), rel=1e-4) and plain.std() > 0
    assert any((f == 2.0).any() for f in factors.values())


def test_resumed_prune_pipeline_trains_the_same_ids_to_the_same_weights(tmp_path, trained):
    seen, _ = trained
    stages = [PRUNE, {"kind": "mix", "use": "random"}]
    knobs = dict(stages=stages, update_step=2, max_steps=8, per_device_train_batch_size=16, save_steps=3)
    full = small_trainer(PipelineTrainer, tmp_path / "full", save_final_model=True, **knobs)
    full.train()
    reference = {s: [i for i, _ in seen[s]] for s in seen}
    seen.clear()
    resumed = resumed_small_trainer(PipelineTrainer, tmp_path, 3, **knobs)  # mid-window, pruning in force
    resumed.train()
    assert {s: [i for i, _ in seen[s]] for s in seen} == {s: reference[s] for s in range(4, 9)}
    assert full.prune is not None and resumed.prune is not None
    np.testing.assert_array_equal(full.prune.weights, resumed.prune.weights)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
