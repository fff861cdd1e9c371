"""trainer=pipeline in process: the ledger is exactly the trained ids with each id's stage chain, filters keep
`keep_ratio` of the pool, the window order is the reorder pattern of the cached losses, and weight stages
stack multiplicatively."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataflex.train.ledger import read_ledger
from dataflex.train.loop import TrainingLoop
from dataflex.train.reorder.patterns import ReorderSpec, reorder
from dataflex.train.reorder.sampler import derived_seed
from dataflex.train.trainer.pipeline import PipelineTrainer

from helpers import small_trainer

FILTER = {
    "kind": "select",
    "use": "loss",
    "mode": "filter",
    "keep_ratio": 0.25,
    "every": 6,
    "component": {"focus": "high"},
}
MIX = {"kind": "mix", "use": "random", "warmup_step": 2}
SAW = {"kind": "reorder", "component": {"pattern": "saw", "sections": 2, "folding_ratio": 0.1, "layers": 2}}
WEIGHT = {"kind": "weight", "use": "loss", "warmup_step": 2, "every": 1}


def _train(tmp_path, stages, monkeypatch=None, **args):
    seen: list[int] = []
    if monkeypatch is not None:
        original = TrainingLoop._forward

        def record(self, model, mb, ctx):
            seen.extend(mb["sample_ids"].tolist())
            return original(self, model, mb, ctx)

        monkeypatch.setattr(TrainingLoop, "_forward", record)
    trainer = small_trainer(
        PipelineTrainer, tmp_path, stages=stages, update_step=2, **{"max_steps": 6, **args}
    )
    trainer.train()
    return trainer, seen


def test_ledger_is_the_trained_ids_with_their_stage_chain(tmp_path, monkeypatch):
    trainer, seen = _train(tmp_path, [FILTER, MIX, SAW, WEIGHT], monkeypatch)
    ledger = read_ledger(tmp_path).to_pylist()
    assert [r["sample_id"] for r in ledger] == seen and len(seen) == 6 * 8
    chains = {r["step"]: r["stage"] for r in ledger}
    assert chains[1] == "filter:loss>mix:random>reorder:saw"  # steps 1-2: before the weighter's warmup
    assert chains[3] == "filter:loss>mix:random>reorder:saw+weight:loss"
    assert {r["weight"] for r in ledger if r["step"] <= 2} == {1.0}
    later = [r["weight"] for r in ledger if r["step"] == 3]
    assert sum(later) == pytest.approx(8, abs=1e-4) and max(later) > 1.0
    # The filter kept a quarter of the 160 items, and every trained id is one of them.
    plans = [json.loads(p.read_text()) for p in sorted((tmp_path / "pipeline").glob("plan_*.json"))]
    assert [p["boundary"] for p in plans] == [0, 2, 4] and {p["pool"] for p in plans} == {40}
    kept = trainer.filters[0].kept
    assert len(kept) == 40 and set(seen) <= set(kept.tolist())
    assert [i for p in plans for i in p["ids"]] == seen


def test_window_order_is_the_pattern_of_the_shared_losses(tmp_path):
    trainer, _ = _train(tmp_path, [FILTER, {"kind": "mix", "use": "random"}, SAW], max_steps=2)
    plan = json.loads((tmp_path / "pipeline" / "plan_000000.json").read_text())
    window = np.asarray(plan["ids"])
    # The cache holds the losses the filter computed at boundary 0 (same weights): the window is the mixer's
    # draw, replayed from its seed and proportions, in the saw order of those losses.
    losses = trainer.cache.values["loss"][:, 0].astype(np.float64)
    assert (trainer.cache.computed_at["loss"][window] == 0).all()
    spec = ReorderSpec(pattern="saw", sections=2, folding_ratio=0.1, layers=2, seed=derived_seed(42, 0))
    drawn = trainer.mix.sampler  # the random mixer's draw of the window, replayed from its seed
    assert drawn is not None
    p = trainer.mix.manager.proportions  # the random mixer's draw at boundary 0
    replay = type(drawn)(drawn.domain_rows, p, seed=drawn.seed, domain_names=drawn.names)
    ids = replay.next(len(window))
    assert window.tolist() == ids[reorder(losses[ids], spec)].tolist()
    assert trainer.cache.passes == 1  # the filter's pass served the reorder stage too


def test_weight_stages_multiply(tmp_path):
    one, _ = _train(tmp_path / "one", [WEIGHT], max_steps=3)
    uniform = {**WEIGHT, "name": "flat", "component": {"strategy": "uniform"}}
    two, _ = _train(tmp_path / "two", [WEIGHT, uniform], max_steps=3)
    twice, _ = _train(tmp_path / "twice", [WEIGHT, {**WEIGHT, "name": "again"}], max_steps=3)

    def step3(run):
        rows = [r for r in read_ledger(run).to_pylist() if r["step"] == 3]
        return np.asarray([r["weight"] for r in rows], dtype=np.float64), rows[0]["stage"]

    w1, s1 = step3(tmp_path / "one")
    w2, s2 = step3(tmp_path / "two")
    w3, s3 = step3(tmp_path / "twice")
    assert s1.endswith("+weight:loss") and s2.endswith("+weight:loss+flat") and s3.endswith("+again")
    np.testing.assert_allclose(w2, w1, rtol=1e-5)  # x uniform = unchanged
    np.testing.assert_allclose(w3, w1**2 / (w1**2).sum() * len(w1), rtol=1e-4)  # (N w)^2, normalised


def test_a_loss_reweighting_mixer_joins_the_weights(tmp_path, monkeypatch):
    """DoReMi-style mixers weigh each sample by its domain's alpha; the pipeline multiplies that in:
    ledger weight = N x alpha[d_i] / sum_j alpha[d_j] (times the weight stages' factors, here none)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    stages = [{"kind": "mix", "component": {"_target_": "alpha_mixer.AlphaMixer"}}]
    trainer, _ = _train(tmp_path, stages, max_steps=2)
    assert trainer.mix is not None and trainer.mix.mixer.calls == 2
    domain = {n: i for i, n in enumerate(trainer.train_data.domain_names)}
    for step in (1, 2):
        rows = [r for r in read_ledger(tmp_path).to_pylist() if r["step"] == step]
        alpha = np.asarray([domain[r["domain"]] + 1.0 for r in rows])
        np.testing.assert_allclose([r["weight"] for r in rows], len(rows) * alpha / alpha.sum(), rtol=1e-5)
        assert rows[0]["stage"] == "mix:AlphaMixer+mix:AlphaMixer"
