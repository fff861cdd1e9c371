"""trainer=dynamic_reorder on a real tiny model: the trained order is the pattern of the scores, every epoch
trains every item once, and a resumed run trains the same ids to the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataflex.train.loop import TrainingLoop
from dataflex.train.reorder.patterns import ReorderSpec, reorder
from dataflex.train.selector.scoring import sample_losses
from dataflex.train.trainer.dynamic_reorder import DynamicReorderTrainer

from helpers import small_trainer

N_ITEMS = 160  # small_data: 32 rows of each of the five embedded domains; batches of 16: 10 steps an epoch


@pytest.fixture
def trained(monkeypatch):
    """Sample ids of every micro-batch the model trained on, per step (1-based)."""
    seen: dict[int, list[int]] = {}
    original = TrainingLoop._forward

    def record(self, model, mb, ctx):
        seen.setdefault(ctx.step + 1, []).extend(mb["sample_ids"].tolist())
        return original(self, model, mb, ctx)

    monkeypatch.setattr(TrainingLoop, "_forward", record)
    return seen


def _flat(seen: dict[int, list[int]]) -> list[int]:
    return [i for step in sorted(seen) for i in seen[step]]


def _initial_losses(trainer) -> np.ndarray:
    ids = np.arange(len(trainer.train_data))
    pad = trainer.tokenizer.pad_token_id
    losses = sample_losses(
        trainer.model, trainer.train_data, ids, batch_size=None, pad_token_id=pad, device="cpu"
    )
    return losses.double().numpy()


@pytest.mark.parametrize("pattern,knobs", [("sorting", {}), ("saw", {"sections": 3, "folding_ratio": 0.2})])
def test_static_loss_order_is_the_pattern_of_the_initial_losses(tmp_path, trained, pattern, knobs):
    trainer = small_trainer(
        DynamicReorderTrainer,
        tmp_path,
        max_steps=12,
        per_device_train_batch_size=16,
        pattern=pattern,
        layers=2,
        **knobs,
    )
    losses = _initial_losses(trainer)  # the weights before the first step: what the static order is made of
    trainer.train()
    expected = reorder(losses, ReorderSpec(pattern=pattern, layers=2, seed=42, **knobs)).tolist()
    order = _flat(trained)
    assert len(order) == 192 and order[:N_ITEMS] == expected
    # epoch 1 (steps 11-12) starts over with the same scores (seed 43: sorting/saw have no random part)
    assert order[N_ITEMS:] == expected[:32]
    if pattern == "sorting":
        assert np.all(np.diff(losses[order[:N_ITEMS]]) >= 0)  # low loss first: high scores later


def test_field_scores_descending(tmp_path, trained, monkeypatch):
    scores = np.random.default_rng(0).permutation(N_ITEMS).astype(float)
    monkeypatch.setattr("dataflex.data.engine.DataEngine.field_values", lambda self, name: scores)
    trainer = small_trainer(
        DynamicReorderTrainer,
        tmp_path,
        max_steps=10,
        per_device_train_batch_size=16,
        pattern="sorting",
        ascending=False,
        score_source="field",
        score_field="q",
    )
    trainer.train()
    assert _flat(trained) == np.argsort(-scores, kind="stable").tolist()


def test_file_scores_with_segment(tmp_path, trained):
    scores = np.arange(N_ITEMS, dtype=float)[::-1]  # item i scores 159 - i
    np.savetxt(tmp_path / "scores.txt", scores)
    trainer = small_trainer(
        DynamicReorderTrainer,
        tmp_path / "run",
        max_steps=10,
        per_device_train_batch_size=16,
        pattern="segment",
        x_pct=10,
        y_pct=20,
        score_source="file",
        score_path=str(tmp_path / "scores.txt"),
    )
    trainer.train()
    order = _flat(trained)
    # front: the 16 lowest scores = items 144..159; back: the 32 highest of the rest = items 0..31
    assert set(order[:16]) == set(range(144, 160)) and set(order[-32:]) == set(range(32))
    assert sorted(order) == list(range(N_ITEMS))
    with pytest.raises(ValueError, match="holds 3 scores"):
        np.save(tmp_path / "short.npy", np.zeros(3))
        small_trainer(
            DynamicReorderTrainer,
            tmp_path / "r2",
            score_source="file",
            score_path=str(tmp_path / "short.npy"),
        ).train()


def test_dynamic_reorders_the_rest_and_every_epoch_trains_every_item_once(tmp_path, trained):
    trainer = small_trainer(
        DynamicReorderTrainer,
        tmp_path,
        max_steps=24,
        per_device_train_batch_size=16,
        pattern="folding",
        layers=2,
        update_step=4,
    )
    trainer.train()
    order = _flat(trained)
    assert sorted(order[:N_ITEMS]) == list(range(N_ITEMS))
    assert sorted(order[N_ITEMS : 2 * N_ITEMS]) == list(range(N_ITEMS))
    # scorings: the first epoch; updates after steps 4 8 12 16 (after step 20 epoch 1 is used up: nothing
    # to re-order); the starts of epochs 1 and 2 (before steps 11 and 21)
    assert trainer.rescored == 1 + 4 + 2


def test_dynamic_resume_trains_the_same_ids_to_the_same_weights(tmp_path, trained):
    knobs = dict(
        max_steps=12,
        per_device_train_batch_size=16,
        pattern="zigzag",
        layers=2,
        update_step=3,
        window=4,
        save_steps=4,
    )
    full = small_trainer(DynamicReorderTrainer, tmp_path / "full", save_final_model=True, **knobs)
    full.train()
    reference = dict(trained)
    trained.clear()
    resumed = small_trainer(
        DynamicReorderTrainer,
        tmp_path / "resumed",
        save_final_model=True,
        resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-8"),
        **knobs,
    )
    resumed.train()
    assert sorted(trained) == [9, 10, 11, 12]
    assert {s: trained[s] for s in trained} == {s: reference[s] for s in range(9, 13)}
    a = full.model.state_dict()
    b = resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_bad_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="score_field"):
        small_trainer(DynamicReorderTrainer, tmp_path, score_source="field")
    with pytest.raises(ValueError, match="update_step"):
        small_trainer(DynamicReorderTrainer, tmp_path, score_source="field", score_field="q", update_step=2)
    with pytest.raises(ValueError, match="pattern"):
        small_trainer(DynamicReorderTrainer, tmp_path, pattern="spiral")
