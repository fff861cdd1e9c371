"""trainer=infobatch on a real tiny model: each epoch trains InfoBatch's plan of the losses seen so far, the
kept low-loss samples carry weight 1 / keep ratio (in the loss and in the ledger), pruning stops at delta,
and a resumed run trains the same ids to the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataflex.train.ledger import read_ledger
from dataflex.train.loop import TrainingLoop
from dataflex.train.selector.infobatch import INITIAL_SCORE, InfoBatchSettings, epoch_plan
from dataflex.train.trainer.infobatch import InfoBatchTrainer

from helpers import resumed_small_trainer, small_trainer

N = 160  # small_data: 32 rows of each of the five embedded domains


@pytest.fixture
def trained(monkeypatch):
    """Per step (1-based): the (sample id, token-mean loss) pairs the loop trained."""
    seen: dict[int, list[tuple[int, float]]] = {}
    original = TrainingLoop._forward

    def record(self, model, mb, ctx):
        losses = original(self, model, mb, ctx)
        pairs = zip(mb["sample_ids"].tolist(), losses.mean.detach().double().tolist())
        seen.setdefault(ctx.step + 1, []).extend(pairs)
        return losses

    monkeypatch.setattr(TrainingLoop, "_forward", record)
    return seen


def test_epochs_follow_the_plan_of_the_losses_seen(tmp_path, trained, monkeypatch):
    backed: dict[int, float] = {}
    original = InfoBatchTrainer.compute_loss

    def record(self, losses, batch, ctx):
        loss = original(self, losses, batch, ctx)
        backed[ctx.step + 1] = float(loss.detach())
        return loss

    monkeypatch.setattr(InfoBatchTrainer, "compute_loss", record)
    trainer = small_trainer(
        InfoBatchTrainer,
        tmp_path,
        max_steps=20,
        per_device_train_batch_size=16,
        prune_ratio=0.5,
        delta=1.0,
        loss_reduction="sample",  # InfoBatch's own loss: mean over samples of weight x loss
    )
    trainer.train()
    order = [i for s in sorted(trained) for i, _ in trained[s]]
    # epoch 0: every score is the initial constant, nothing below the mean: all 160 items, weight 1
    assert sorted(order[:N]) == list(range(N))
    scores = np.full(N, INITIAL_SCORE)
    for s in range(1, 11):
        for i, loss in trained[s]:
            scores[i] = loss
    ids, weights = epoch_plan(scores, 1, InfoBatchSettings(prune_ratio=0.5, seed=42), anneal=False)
    below = int((scores < scores.mean()).sum())
    assert len(ids) == N - (below - below // 2)  # int(0.5 * below) of the below-mean items kept
    assert order[N : N + len(ids)] == ids.tolist()
    ledger = read_ledger(tmp_path).to_pylist()
    epoch1 = ledger[N : N + len(ids)]
    assert [r["weight"] for r in epoch1] == weights[ids].astype(np.float32).tolist()
    assert sorted({r["weight"] for r in epoch1}) == [1.0, 2.0]
    # the back-propagated loss of a pruned step: mean over the batch of weight x loss
    w = {(r["step"], r["position"]): r["weight"] for r in ledger}
    for step in (12, 15):
        expected = np.mean([w[step, k] * loss for k, (_, loss) in enumerate(trained[step])])
        assert backed[step] == pytest.approx(expected, rel=1e-5)
    # epoch 2 starts inside step 18 (10 steps of epoch 0, then len(ids) items): its plan uses steps 1-17
    start2 = N + len(ids)
    first = next(s for s in sorted(trained) if 16 * s > start2)
    for s in range(11, first):
        for i, loss in trained[s]:
            scores[i] = loss
    ids2, _ = epoch_plan(scores, 2, InfoBatchSettings(prune_ratio=0.5, seed=42), anneal=False)
    assert order[start2:] == ids2[: len(order) - start2].tolist()
    assert trainer.pruned_total == (N - len(ids)) + (N - len(ids2))


def test_no_pruning_after_delta(tmp_path, trained):
    trainer = small_trainer(
        InfoBatchTrainer, tmp_path, max_steps=21, per_device_train_batch_size=16, prune_ratio=0.5, delta=0.3
    )
    trainer.train()
    # epoch 1 starts at step 11 >= 0.3 x 21 steps: complete again, weight 1
    order = [i for s in sorted(trained) for i, _ in trained[s]]
    assert sorted(order[N : 2 * N]) == list(range(N)) and trainer.pruned_total == 0
    assert {r["weight"] for r in read_ledger(tmp_path).to_pylist()} == {1.0}


def test_resume_trains_the_same_ids_to_the_same_weights(tmp_path, trained):
    knobs = dict(max_steps=16, per_device_train_batch_size=16, save_steps=6, save_final_model=True)
    full = small_trainer(InfoBatchTrainer, tmp_path / "full", **knobs)
    full.train()
    reference = {s: [i for i, _ in trained[s]] for s in trained}
    trained.clear()
    resumed = resumed_small_trainer(InfoBatchTrainer, tmp_path, 12, **knobs)
    resumed.train()
    assert {s: [i for i, _ in trained[s]] for s in trained} == {s: reference[s] for s in range(13, 17)}
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
