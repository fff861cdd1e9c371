"""A resumed mix run continues exactly, and every rank makes the same decision (equal to one process's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mix_helpers import distributed_histories, mix_trainer, save_reference

from distributed_utils import run_distributed

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mixer", ["odm", "doremi"])
def test_resumed_mix_run_continues_exactly(tmp_path, mixer):
    component = {"_target_": "dataflex.train.mixer.odm.OdmMixer"}
    if mixer == "doremi":
        component = {
            "_target_": "dataflex.train.mixer.doremi.DoReMiMixer",
            "eta": 5.0,
            "reference_model_path": str(save_reference(tmp_path / "reference")),
        }
    schedule = dict(warmup_step=1, update_step=1, update_times=7, save_steps=4, learning_rate=1e-2)
    full = mix_trainer(tmp_path / "full", component=component, **schedule)
    full.train()
    cut = mix_trainer(tmp_path / "cut", component=component, **schedule)
    cut.train()  # leaves checkpoint-4 behind; resume a fresh trainer from it
    resumed = mix_trainer(
        tmp_path / "cut",
        component=component,
        resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-4"),
        **schedule,
    )
    resumed.train()
    a, b = full.history.as_dict(), resumed.history.as_dict()
    assert a["trained_counts"] == b["trained_counts"]
    assert [u["step"] for u in a["updates"]] == [u["step"] for u in b["updates"]]
    for ua, ub in zip(a["updates"], b["updates"]):
        np.testing.assert_allclose(ua["proportions"], ub["proportions"], rtol=0, atol=1e-9)
    if mixer == "doremi":
        np.testing.assert_allclose(full.mixer.average_alpha, resumed.mixer.average_alpha, rtol=0, atol=1e-9)
        assert (
            resumed.mixer.num_updates == full.mixer.num_updates == 8
        )  # every step, the warmup step included
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_two_ranks_decide_like_one_process(tmp_path):
    reference = str(save_reference(tmp_path / "reference"))
    single = distributed_histories(str(tmp_path / "one"), reference, 2)  # 1 process x 4 x 2 accumulation
    ranks = run_distributed(distributed_histories, 2, str(tmp_path / "two"), reference, 1)  # 2 processes x 4
    assert ranks[0]["odm"] == ranks[1]["odm"]  # the same decision on every rank (exactly)
    assert ranks[0]["doremi_alpha"] == ranks[1]["doremi_alpha"]
    assert ranks[0]["odm_counts"] == single["odm_counts"]  # the same batches...
    for a, b in zip(
        ranks[0]["odm"], single["odm"]
    ):  # ...and the decisions of one process on the global batch
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ranks[0]["doremi_alpha"], single["doremi_alpha"], rtol=0, atol=1e-5)
    assert not np.allclose(single["doremi_alpha"], 0.2)
