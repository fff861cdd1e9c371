"""A run resumed from a checkpoint weights exactly like the uninterrupted run: the weighter's state (the
temperature schedule's position, adapt's anchors and refresh step) travels in the trainer state."""

from __future__ import annotations

import pytest
import torch
from weight_helpers import component, schema, train_tiny

CASES = [
    (
        "loss",
        {
            "strategy": "linupper",
            "temperature": 0.3,
            "temperature_schedule": "step",
            "temperature_start": 5.0,
            "temperature_warmup_steps": 2,
        },
    ),
    ("adapt", {"tau": 0.02, "refresh_interval": 2, "max_anchors": 16}),
]


@pytest.mark.parametrize("name, params", CASES, ids=[c[0] for c in CASES])
def test_resumed_run_applies_the_same_weights(tmp_path, name, params):
    full = train_tiny(
        component(schema(name), **params),
        steps=5,
        warmup_step=1,
        save_steps=2,
        run_dir=str(tmp_path / "full"),
    )
    resumed = train_tiny(
        component(schema(name), **params),
        steps=5,
        warmup_step=1,
        save_steps=2,
        run_dir=str(tmp_path / "full"),
        resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"),
    )
    assert len(resumed.weights) == 3  # steps 2, 3, 4
    for got, want in zip(resumed.weights, full.weights[2:]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)
    for got, want in zip(resumed.grads, full.grads[2:]):
        assert float((got - want).norm() / want.norm()) < 1e-5
    assert resumed.weighter.state_dict().keys() == full.weighter.state_dict().keys()
    if name == "loss":
        assert [m["weight/temperature"] for m in resumed.metrics] == [5.0, 0.3, 0.3]
    else:
        # restored anchors were used at step 2 (no refresh there); the next refresh came at step 3 as in the
        # full run
        assert (
            (resumed.weighter.refreshes, resumed.weighter.refreshed_at)
            == (2, 3)
            == (full.weighter.refreshes, full.weighter.refreshed_at)
        )
