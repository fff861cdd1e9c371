"""component=precomputed under dynamic_weight: the score -> weight mappings on hand numbers, and a CLI run
whose ledger weights are N x softmax(z / temperature) of the file's scores for the trained ids."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dataflex.config.component.weight import PrecomputedWeighterConfig
from dataflex.train.ledger import read_ledger
from dataflex.train.weighter.precomputed_weighter import PrecomputedWeighter, score_weights, standardized

from helpers import FAST

SCORES = np.array([0.0, 1.0, 2.0, 3.0])


class Items:
    def __len__(self) -> int:
        return len(SCORES)


def _weighter(tmp_path, **kw) -> PrecomputedWeighter:
    np.save(tmp_path / "s.npy", SCORES)
    return PrecomputedWeighter(
        PrecomputedWeighterConfig(score_path=str(tmp_path / "s.npy"), **kw), train_data=Items()
    )


def _ctx(ids):
    return SimpleNamespace(sample_ids=torch.tensor(ids))


def test_standardized_scores():
    # mean 1.5, population std sqrt(1.25)
    z = standardized(SCORES)
    assert np.allclose(z, (SCORES - 1.5) / math.sqrt(1.25))
    assert standardized(np.array([2.0, 2.0])).tolist() == [0.0, 0.0]


def test_softmax_weights_on_hand_numbers(tmp_path):
    w = _weighter(tmp_path, temperature=0.5)
    losses = torch.tensor([1.0, 2.0])
    loss = w.get_weighted_loss(losses, ctx=_ctx([3, 0]))
    # z_3 - z_0 = 3 / sqrt(1.25) = 2.683; at temperature 0.5 the ratio of the weights is e^(5.367)
    ratio = math.exp(3 / math.sqrt(1.25) / 0.5)
    w3, w0 = ratio / (1 + ratio), 1 / (1 + ratio)
    assert float(loss) == pytest.approx(w3 * 1.0 + w0 * 2.0, rel=1e-6)
    assert w.metrics()["max_nw"] == pytest.approx(2 * w3, rel=1e-6)
    # the weight depends on the whole set's statistics, not the batch: the same pair in another batch keeps
    # its ratio
    direct = score_weights(torch.as_tensor(standardized(SCORES)[[3, 0, 1]]), "softmax", 0.5)
    assert float(direct[0] / direct[1]) == pytest.approx(ratio, rel=1e-6)


def test_low_scores_first_and_a_large_temperature_is_uniform(tmp_path):
    w = _weighter(tmp_path, higher_is_better=False)
    weights = score_weights(w.item_scores[[0, 3]], "softmax", 1.0, higher_is_better=False)
    assert float(weights[0]) > 0.9
    flat = score_weights(w.item_scores[[0, 1, 2, 3]], "softmax", 1e9)
    assert torch.allclose(flat, torch.full((4,), 0.25, dtype=flat.dtype))


def test_proportional_weights(tmp_path):
    w = _weighter(tmp_path, mapping="proportional")
    loss = w.get_weighted_loss(torch.tensor([4.0, 8.0]), ctx=_ctx([1, 3]))
    assert float(loss) == pytest.approx(0.25 * 4.0 + 0.75 * 8.0)  # 1/(1+3), 3/(1+3)
    zero = score_weights(torch.tensor([0.0, 0.0]), "proportional", 1.0)
    assert zero.tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({}, "exactly one of component.score_field"),
        ({"score_field": "q", "temperature": 0.0}, r"component\.temperature must be > 0"),
        ({"score_field": "q", "mapping": "rank"}, r"component\.mapping"),
        ({"score_field": "q", "mapping": "proportional", "higher_is_better": False}, "higher_is_better"),
    ],
)
def test_schema_errors_name_the_key(kw, match):
    with pytest.raises(ValueError, match=match):
        PrecomputedWeighterConfig(**kw)


@pytest.mark.slow
def test_cli_ledger_weights_follow_the_scores(cli, tmp_path):
    from dataflex.data import DataArguments, DataEngine

    n = len(DataEngine(DataArguments(max_samples=64), split="train"))
    scores = np.random.default_rng(2).normal(size=n)
    np.savetxt(tmp_path / "scores.txt", scores)
    out = tmp_path / "run"
    cli(
        *FAST,
        "trainer=dynamic_weight",
        "component=precomputed",
        f"component.score_path={tmp_path / 'scores.txt'}",
        "component.temperature=2.0",
        "trainer.warmup_step=1",
        f"trainer.output_dir={out}",
    )
    ledger = read_ledger(out).to_pylist()
    z = (scores - scores.mean()) / scores.std()
    assert {r["weight"] for r in ledger if r["step"] == 1} == {1.0}  # warmup: plain mean
    for step in (2, 3, 4):
        rows = [r for r in ledger if r["step"] == step]
        ids = np.array([r["sample_id"] for r in rows])
        e = np.exp(z[ids] / 2.0)
        expected = len(ids) * e / e.sum()
        assert np.allclose([r["weight"] for r in rows], expected, rtol=1e-4)
