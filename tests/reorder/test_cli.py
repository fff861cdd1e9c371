"""`dataflex-run trainer=dynamic_reorder` and `trainer=infobatch` compose, validate and train; the ledger of a
reorder run with file scores is exactly the pattern's permutation of those scores."""

from __future__ import annotations

import numpy as np
import pytest

from dataflex.data import DataArguments, DataEngine
from dataflex.run import validate
from dataflex.train.components import check_component
from dataflex.train.ledger import read_ledger
from dataflex.train.reorder.patterns import ReorderSpec, reorder

from helpers import FAST


def test_reorder_run_trains_the_pattern_of_the_file_scores(cli, tmp_path):
    n = len(DataEngine(DataArguments(max_samples=64), split="train"))
    scores = np.random.default_rng(3).random(n)
    np.save(tmp_path / "scores.npy", scores)
    out = tmp_path / "run"
    cli(
        *FAST,
        "trainer=dynamic_reorder",
        "trainer.pattern=zigzag",
        "trainer.layers=3",
        "trainer.ascending=false",
        "trainer.score_source=file",
        f"trainer.score_path={tmp_path / 'scores.npy'}",
        f"trainer.output_dir={out}",
    )
    ledger = read_ledger(out)
    expected = reorder(scores, ReorderSpec(pattern="zigzag", layers=3, ascending=False, seed=42))
    assert ledger["sample_id"].to_pylist() == expected[: ledger.num_rows].tolist()
    assert set(ledger["stage"].to_pylist()) == {"reorder:zigzag:static"}


@pytest.mark.parametrize(
    "overrides, key",
    [
        (("trainer=dynamic_reorder", "trainer.pattern=spiral"), "trainer.pattern"),
        (("trainer=dynamic_reorder", "trainer.score_source=field"), "trainer.score_field"),
        (
            (
                "trainer=dynamic_reorder",
                "trainer.score_source=file",
                "trainer.score_path=x.npy",
                "trainer.update_step=5",
            ),
            "trainer.update_step",
        ),
        (("trainer=infobatch", "trainer.prune_ratio=1.0"), "trainer.prune_ratio"),
        (("trainer=dynamic_weight", "component=joint_update_aware", "component.tau=0"), "component.tau"),
    ],
)
def test_bad_values_fail_at_validation(compose, overrides, key):
    cfg = compose(*overrides)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate(cfg)
        check_component("weighter", cfg.component)


def test_infobatch_and_joint_update_aware_runs(cli, tmp_path):
    cli(*FAST, "trainer=infobatch", "trainer.max_steps=6", f"trainer.output_dir={tmp_path / 'ib'}")
    assert set(read_ledger(tmp_path / "ib")["stage"].to_pylist()) == {"infobatch"}
    out = tmp_path / "jua"
    cli(
        *FAST,
        "trainer=dynamic_weight",
        "component=joint_update_aware",
        "trainer.warmup_step=1",
        f"trainer.output_dir={out}",
    )
    ledger = read_ledger(out).to_pylist()
    assert {r["weight"] for r in ledger if r["step"] == 1} == {1.0}  # warmup: the plain mean
    later = [r["weight"] for r in ledger if r["step"] == 2]
    assert abs(sum(later) - len(later)) < 1e-3 and max(later) > 1.0  # N x w: sums to N, not uniform
