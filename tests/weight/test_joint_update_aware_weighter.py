"""component=joint_update_aware end to end: the weights of a weighted step are the solver's weights of the
batch's embeddings against the eval set's mean embedding (both under the model of that step), and they are
what the trainer applied."""

from __future__ import annotations

import numpy as np
import torch

from dataflex.config.component.weight import JointUpdateAwareWeighterConfig
from dataflex.train.loop import TrainingLoop
from dataflex.train.signals.embeddings import sample_embeddings
from dataflex.train.trainer.dynamic_weight import DynamicWeightTrainer
from dataflex.train.weighter.joint_update_aware import joint_update_aware_weights

from helpers import small_trainer

TARGET = "dataflex.train.weighter.joint_update_aware.JointUpdateAwareWeighter"


def test_first_weighted_step_uses_the_solver_on_the_batch(tmp_path, monkeypatch):
    ids: list[int] = []
    original = TrainingLoop._forward

    def record(self, model, mb, ctx):
        ids.extend(mb["sample_ids"].tolist())
        return original(self, model, mb, ctx)

    monkeypatch.setattr(TrainingLoop, "_forward", record)
    component = {
        "_target_": TARGET,
        "beta": 0.5,
        "tau": 0.02,
        "iters": 20,
        "damping": 0.5,
        "max_targets": None,
    }
    trainer = small_trainer(
        DynamicWeightTrainer, tmp_path, eval_data=True, max_steps=1, warmup_step=0, component=component
    )
    pad = trainer.tokenizer.pad_token_id
    every = sample_embeddings(
        trainer.model,
        trainer.train_data,
        range(len(trainer.train_data)),
        batch_size=64,
        pad_token_id=pad,
        normalize=False,
    )
    target = sample_embeddings(
        trainer.model,
        trainer.eval_data,
        range(len(trainer.eval_data)),
        batch_size=64,
        pad_token_id=pad,
        normalize=False,
    ).mean(0)
    trainer.train()
    settings = JointUpdateAwareWeighterConfig(beta=0.5, tau=0.02, iters=20, damping=0.5)
    expected = joint_update_aware_weights(every[np.asarray(ids)], target, settings)
    got = trainer.weighter.last_weights
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert abs(float(got.sum()) - 1.0) < 1e-6
    # the trainer applied these weights (its per-sample gradient weights of the step)
    torch.testing.assert_close(trainer._last["weights"].float(), got.float(), rtol=0, atol=1e-6)
    assert float(got.max()) > 1.5 / len(got)  # not uniform: the solver had something to say
