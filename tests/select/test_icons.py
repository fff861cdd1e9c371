"""ICONS (arXiv 2501.00654): per-task influence, the consensus vote and its tie rules on hand numbers; the
selector on a tiny model picks exactly the consensus of its own LESS features; a CLI run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from select_helpers import make_setup, step_adamw

from dataflex.config.component.select import IconsSelectorConfig
from dataflex.train.selector.icons_selector import (
    IconsSelector,
    consensus_select,
    consensus_votes,
    mean_percentile_rank,
    task_influence,
)
from dataflex.train.selector.less_selector import less_scores

from helpers import FAST

# 6 candidates x 3 tasks. With p = 1/3 each column's threshold is its 66.67th percentile (linear interpolation
# at position 5 x 2/3 = 3.33 of the sorted column):
#   task 0 sorted 0.1 0.2 0.3 0.4 0.8 0.9 -> 0.4 + 1/3 x 0.4 = 0.5333: votes for ids 0, 2
#   task 1 sorted 0.0 0.1 0.2 0.5 0.6 0.7 -> 0.5 + 1/3 x 0.1 = 0.5333: votes for ids 1, 2
#   task 2 sorted 0.0 0.1 0.2 0.3 0.8 0.9 -> 0.3 + 1/3 x 0.5 = 0.4667: votes for ids 1, 4
INFLUENCE = np.array(
    [
        [0.9, 0.5, 0.3],
        [0.1, 0.7, 0.9],
        [0.8, 0.6, 0.0],
        [0.2, 0.1, 0.1],
        [0.3, 0.2, 0.8],
        [0.4, 0.0, 0.2],
    ]
)


def test_votes_on_hand_numbers():
    assert consensus_votes(INFLUENCE, 1 / 3).tolist() == [1, 2, 2, 0, 1, 0]
    # p = 1: the 0th percentile is each column's minimum, every candidate gets every vote.
    assert consensus_votes(INFLUENCE, 1.0).tolist() == [3] * 6


def test_a_threshold_hit_exactly_votes_inclusively():
    col = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]])
    # p = 0.5: the 50th percentile is exactly 3.0 (position 2), and the authors' `>=` lets it vote: 3 of 5.
    assert consensus_votes(col, 0.5).tolist() == [1, 1, 1, 0, 0]
    # p = 0.4: position 4 x 0.6 = 2.4 -> 3 + 0.4 x 1 = 3.4: only 5 and 4.
    assert consensus_votes(col, 0.4).tolist() == [1, 1, 0, 0, 0]


def test_most_votes_win_and_ties_follow_the_rule():
    rng = np.random.default_rng(0)
    pos, votes = consensus_select(INFLUENCE, 2, 1 / 3, rng)
    assert sorted(pos.tolist()) == [1, 2] and votes.tolist() == [1, 2, 2, 0, 1, 0]
    # k = 3: ids 0 and 4 tie at one vote. mean_rank: within-task ranks (0 = lowest) of id 0 are 5, 3, 3 and of
    # id 4 are 2, 2, 4 -> means 11/3 > 8/3, so id 0.
    ranks = mean_percentile_rank(INFLUENCE) * 5
    assert ranks[0] == pytest.approx(11 / 3) and ranks[4] == pytest.approx(8 / 3)
    for seed in range(5):
        pos, _ = consensus_select(INFLUENCE, 3, 1 / 3, np.random.default_rng(seed), "mean_rank")
        assert sorted(pos.tolist()) == [0, 1, 2]
    # random: one of the tied two, the same for the same seed, both over seeds.
    third = {
        int(consensus_select(INFLUENCE, 3, 1 / 3, np.random.default_rng(seed))[0][2]) for seed in range(20)
    }
    assert third == {0, 4}
    a = consensus_select(INFLUENCE, 3, 1 / 3, np.random.default_rng(7))[0]
    b = consensus_select(INFLUENCE, 3, 1 / 3, np.random.default_rng(7))[0]
    assert a.tolist() == b.tolist()


def test_consensus_prefers_the_all_rounder_that_less_max_does_not():
    """A specialist (high on one task) vs an all-rounder (good on all): LESS's max over tasks takes the
    specialist, ICONS's vote the all-rounder."""
    influence = np.array([[1.0, 0.0, 0.0], [0.6, 0.6, 0.6], [0.1, 0.1, 0.1], [0.0, 0.2, 0.2]])
    # p = 0.5: thresholds at position 1.5 of each sorted column: 0.1 + 0.5 x 0.5 = 0.35 (ids 0, 1 vote), then
    # 0.1 + 0.5 x 0.1 = 0.15 twice (ids 1, 3).
    pos, votes = consensus_select(influence, 1, 0.5, np.random.default_rng(0))
    assert pos.tolist() == [1] and votes.tolist() == [1, 3, 0, 2]
    assert int(np.argmax(influence.max(axis=1))) == 0


def test_task_influence_is_the_mean_inner_product_per_task():
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    groups = np.array([0, 0, 1])
    # id 0: task 0 mean(1, 0) = 0.5, task 1: 0.8; id 1: task 0 mean(0.6, 0.8) = 0.7, task 1: 0.48 + 0.48.
    expected = np.array([[0.5, 0.8], [0.7, 0.96]])
    assert np.allclose(task_influence(train, target, groups), expected)
    # LESS's score is the max of the same per-task means.
    assert np.allclose(less_scores(train, target, groups).numpy(), expected.max(axis=1))


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"vote_fraction": 0.0}, "vote_fraction"),
        ({"vote_fraction": 1.5}, "vote_fraction"),
        ({"tie_break": "x"}, "tie_break"),
    ],
)
def test_bad_values_name_the_key(kw, key):
    with pytest.raises(ValueError, match=f"component.{key}"):
        IconsSelectorConfig(**kw)


def test_selector_picks_the_consensus_of_its_own_features():
    s = make_setup("full", seed=1)
    opt = step_adamw(s.model, s.train, np.arange(100), s.pad)
    sel = IconsSelector(
        s.train,
        None,
        None,
        "unused",
        config=IconsSelectorConfig(
            seed=3,
            proj_dim=128,
            target_domain="target,arith,reverse",
            target_max_samples=3,
            tie_break="mean_rank",
        ),
    )
    sel.bind(s.context())
    pool = np.arange(0, 100, 4)
    picked = sel.select(s.model, 10, 5, candidates=pool, optimizer=opt)
    train = sel.train_features(s.model, pool, opt)
    influence = task_influence(train, sel.target_features(s.model), sel.target.groups)
    assert influence.shape == (25, 3)
    pos, votes = consensus_select(influence, 5, 5 / 25, sel.rng(10), "mean_rank")
    assert picked == pool[pos].tolist()
    assert sel.last_scores.tolist() == votes[pos].tolist()
    assert sel.last_info["tasks"] == "target,arith,reverse"
    # the selected are the most voted: nobody left out has more votes than the least voted selected
    left_out = np.setdiff1d(np.arange(25), pos)
    assert votes[left_out].max() <= votes[pos].min()


@pytest.mark.slow
def test_cli_icons_run(cli, tmp_path):
    out = tmp_path / "run"
    cli(
        *FAST,
        "trainer=dynamic_select",
        "component=icons",
        "component.target_domain='target,arith,reverse'",
        "component.target_max_samples=4",
        "component.proj_dim=64",
        "trainer.warmup_step=1",
        "trainer.update_step=2",
        "trainer.update_times=2",
        "trainer.max_steps=-1",
        "trainer.candidate_pool_size=40",
        f"trainer.output_dir={out}",
    )
    for update in (1, 2):
        record = json.loads((out / "selection" / f"update_{update:03d}.json").read_text())
        assert len(record["selected"]) == 8 and len(set(record["selected"])) == 8
        assert record["info"]["tasks"] == "target,arith,reverse"
        assert record["info"]["vote_fraction"] == pytest.approx(8 / 40)
        votes = record["scores"]
        assert all(v in (0.0, 1.0, 2.0, 3.0) for v in votes)
        assert min(votes) == record["info"]["selected_votes_min"]
