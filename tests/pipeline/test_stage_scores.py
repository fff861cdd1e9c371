"""A reorder stage ordered by another component's scores from the same run (`score_source: stage`): the
scores a select stage gave the ids it kept (a hand-scored selector; LESS's influence scores on a tiny model,
its gradient features computed once through the pipeline's signal cache)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataflex.train.ledger import read_ledger
from dataflex.train.selector import less_selector
from dataflex.train.trainer.pipeline import PipelineTrainer

from helpers import resumed_small_trainer, small_trainer

SCORED = {
    "kind": "select",
    "mode": "filter",
    "keep_ratio": 0.25,
    "every": 4,
    "name": "scored",
    "component": {"_target_": "scored_selector.ScoredSelector"},
}
BY_STAGE = {"pattern": "sorting", "score_source": "stage", "score_stage": "scored"}


@pytest.fixture
def scored(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import scored_selector

    return scored_selector


def test_reorder_orders_the_pool_by_a_select_stage_scores(tmp_path, scored):
    """Filter: the 40 best of 160 by score (37 i mod 160, hand-known); the reorder stage takes the budget and
    sorts the kept 40 by those scores, ascending: the ledger is that order (32 = 4 steps x 8)."""
    stages = [SCORED, {"kind": "reorder", "component": BY_STAGE}]
    trainer = small_trainer(PipelineTrainer, tmp_path, stages=stages, update_step=2, max_steps=4)
    trainer.train()
    ids = np.arange(160)
    kept = ids[np.argsort(-scored.score(ids), kind="stable")[:40]]
    expected = kept[np.argsort(scored.score(kept), kind="stable")]
    ledger = read_ledger(tmp_path).to_pylist()
    assert [r["sample_id"] for r in ledger] == expected[:32].tolist()
    # kept: scores 120-159; the lowest first: 37 x 120 = 4440 = 27 x 160 + 120, 37 x 133 = 30 x 160 + 121, ...
    assert expected[:4].tolist() == [120, 133, 146, 159]
    assert {r["stage"] for r in ledger} == {"scored>reorder:sorting"}
    assert trainer.cache.passes == 0  # no loss was computed: the order is the selector's scores


def test_a_selector_without_scores_fails_naming_the_stage(tmp_path, scored):
    unscored = {**SCORED, "component": {"_target_": "scored_selector.UnscoredSelector"}}
    stages = [unscored, {"kind": "reorder", "component": BY_STAGE}]
    trainer = small_trainer(PipelineTrainer, tmp_path, stages=stages, update_step=2, max_steps=2)
    with pytest.raises(ValueError, match=r"pipeline stage scored: its selector \(UnscoredSelector\) set no"):
        trainer.train()


def test_less_filter_scores_order_each_window(tmp_path, monkeypatch):
    """LESS (plain gradients, 64-dim projection, 4 target rows of `target`) keeps a quarter of the pool; a
    random mixer draws each window from the kept ids and the reorder stage sorts the window by the LESS
    scores of its ids (descending: most influential first). Checked against every candidate's score as LESS
    computed it at boundary 0: the kept ids are the top 40, every window is in score order."""
    computed: list[tuple[np.ndarray, np.ndarray]] = []
    original = less_selector.less_scores

    def record(train, target, groups):
        out = original(train, target, groups)
        computed.append((np.asarray(train.shape), out.numpy().copy()))
        return out

    monkeypatch.setattr(less_selector, "less_scores", record)
    less = {
        "kind": "select",
        "use": "less",
        "mode": "filter",
        "keep_ratio": 0.25,
        "every": 8,
        "component": {
            "gradient_type": "sgd",
            "proj_dim": 64,
            "target_domain": "target",
            "target_split": "train",
            "target_max_samples": 4,
        },
    }
    order = {"pattern": "sorting", "ascending": False, "score_source": "stage", "score_stage": "filter:less"}
    stages = [less, {"kind": "mix", "use": "random"}, {"kind": "reorder", "component": order}]
    trainer = small_trainer(PipelineTrainer, tmp_path, stages=stages, update_step=2, max_steps=4)
    trainer.train()
    assert len(computed) == 1 and computed[0][0].tolist() == [160, 64]  # one pass, boundary 0, all 160
    scores = computed[0][1]
    kept = np.sort(np.argsort(-scores, kind="stable")[:40])
    np.testing.assert_array_equal(trainer.filters[0].kept, kept)
    plans = [json.loads(p.read_text()) for p in sorted((tmp_path / "pipeline").glob("plan_*.json"))]
    assert len(plans) == 2
    for plan in plans:
        window = np.asarray(plan["ids"])
        assert set(window.tolist()) <= set(kept.tolist())
        assert (np.diff(scores[window]) <= 0).all()  # sorted by LESS score, highest first
        assert plan["provenance"] == "filter:less>mix:random>reorder:sorting"
    assert any(k.startswith("grad:") for k in trainer.cache.values)  # features went through the cache


def test_resumed_run_reorders_by_the_checkpointed_stage_scores(tmp_path, scored):
    """The filter decides once (boundary 0); the reorder stage re-orders the rest of its epoch at every
    boundary and starts epoch 2 (after 40 ids = 5 steps) from the stage's scores: a run resumed at step 3
    reads them from the checkpoint and trains the same ids as the uninterrupted run."""
    stages = [{**SCORED, "every": 8}, {"kind": "reorder", "every": 2, "component": BY_STAGE}]
    knobs = dict(stages=stages, update_step=2, max_steps=6, save_steps=3)
    full = small_trainer(PipelineTrainer, tmp_path / "full", **knobs)
    full.train()
    resumed = resumed_small_trainer(PipelineTrainer, tmp_path, 3, **knobs)
    resumed.train()
    ids = [r["sample_id"] for r in read_ledger(tmp_path / "full").to_pylist()]
    again = [r["sample_id"] for r in read_ledger(tmp_path / "resumed").to_pylist() if r["step"] > 3]
    assert again == ids[24:] and len(ids) == 48
    ids_all = np.arange(160)
    kept = ids_all[np.argsort(-scored.score(ids_all), kind="stable")[:40]]
    assert ids[40:] == kept[np.argsort(scored.score(kept), kind="stable")][:8].tolist()  # epoch 2: same order
    assert resumed.filters[0].scores is not None
    np.testing.assert_array_equal(resumed.filters[0].scores.values, full.filters[0].scores.values)
