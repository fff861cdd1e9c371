"""component=precomputed under dynamic_select: top-k and threshold selection on hand scores; the schema's
errors; a CLI run selects the top of the score file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataflex.config.component.select import PrecomputedSelectorConfig
from dataflex.train.selector.precomputed_selector import PrecomputedSelector, threshold_eligible

from helpers import FAST

SCORES = np.array([0.3, 0.9, 0.1, 0.7, 0.5, 0.9, 0.2, 0.8])


class Items:
    """Stand-in training data: only its length and the score file matter to this selector."""

    def __len__(self) -> int:
        return len(SCORES)


def _selector(tmp_path, **kw) -> PrecomputedSelector:
    np.save(tmp_path / "s.npy", SCORES)
    config = PrecomputedSelectorConfig(seed=0, score_path=str(tmp_path / "s.npy"), **kw)
    return PrecomputedSelector(Items(), None, None, None, config=config)


def test_top_k_takes_the_best_candidates(tmp_path):
    sel = _selector(tmp_path)
    # all items: 0.9 (ids 1, 5), then 0.8 (id 7)
    assert sorted(sel.select(None, 0, 3)) == [1, 5, 7]
    # candidates 0, 2, 3, 4, 6: 0.7 (id 3), 0.5 (id 4)
    assert sel.select(None, 0, 2, candidates=np.array([0, 2, 3, 4, 6])) == [3, 4]
    assert sel.last_scores.tolist() == [0.7, 0.5]
    low = _selector(tmp_path, higher_is_better=False)
    assert low.select(None, 0, 2) == [2, 6]  # 0.1, 0.2


def test_ties_at_the_cut_are_broken_by_the_seed(tmp_path):
    picks = {_selector(tmp_path).select(None, step, 1)[0] for step in range(20)}
    assert picks == {1, 5}  # both 0.9s win over the steps, never anything else


def test_threshold_draws_uniformly_among_the_passing(tmp_path):
    assert threshold_eligible(SCORES, 0.7, True).tolist() == [1, 3, 5, 7]
    assert threshold_eligible(SCORES, 0.2, False).tolist() == [2, 6]
    sel = _selector(tmp_path, mode="threshold", threshold=0.7)
    seen = set()
    for step in range(30):
        picked = sel.select(None, step, 3)
        assert len(set(picked)) == 3 and set(picked) <= {1, 3, 5, 7}
        seen |= set(picked)
    assert seen == {1, 3, 5, 7}
    assert sel.last_info["eligible"] == 4
    with pytest.raises(ValueError, match=r"4 of 8 candidates have a score >= component\.threshold=0\.7"):
        sel.select(None, 0, 5)
    repl = _selector(tmp_path, mode="threshold", threshold=0.7, replacement=True)
    assert set(repl.select(None, 0, 12)) <= {1, 3, 5, 7}


@pytest.mark.parametrize(
    "kw, match",
    [
        ({}, "exactly one of component.score_field"),
        ({"score_field": "q", "score_path": "s.npy"}, "exactly one of component.score_field"),
        ({"score_field": "q", "mode": "threshold"}, r"component\.threshold="),
        ({"score_field": "q", "threshold": 0.5}, r"component\.threshold is only read"),
        ({"score_field": "q", "mode": "best"}, r"component\.mode"),
    ],
)
def test_schema_errors_name_the_key(kw, match):
    with pytest.raises(ValueError, match=match):
        PrecomputedSelectorConfig(**kw)


@pytest.mark.slow
def test_cli_selects_the_top_of_the_score_file(cli, tmp_path):
    from dataflex.data import DataArguments, DataEngine

    n = len(DataEngine(DataArguments(max_samples=64), split="train"))
    scores = np.random.default_rng(5).random(n)
    np.save(tmp_path / "scores.npy", scores)
    out = tmp_path / "run"
    cli(
        *FAST,
        "trainer=dynamic_select",
        "component=precomputed",
        f"component.score_path={tmp_path / 'scores.npy'}",
        "trainer.warmup_step=1",
        "trainer.update_step=2",
        "trainer.update_times=1",
        "trainer.max_steps=-1",
        "trainer.selection_order=selector",
        f"trainer.output_dir={out}",
    )
    record = json.loads((out / "selection" / "update_001.json").read_text())
    assert record["selected"] == np.argsort(-scores)[:8].tolist()
    assert np.allclose(record["scores"], np.sort(scores)[::-1][:8])
