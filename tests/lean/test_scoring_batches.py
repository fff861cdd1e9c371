"""Forward-only scoring in length buckets under a token budget: same numbers as one-row-at-a-time and
unbucketed batches, in the caller's order; batches respect the budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataflex.models.tiny import build_tiny_model
from dataflex.train.evaluation import evaluate
from dataflex.train.selector.scoring import sample_losses
from dataflex.train.signals.batching import length_batches
from dataflex.train.signals.losses import LossSettings, configure_losses, loss_settings

from helpers import SMALL_MODEL, small_data


@pytest.fixture(scope="module")
def setup():
    bundle = build_tiny_model(**SMALL_MODEL)
    data = small_data(bundle.tokenizer, max_samples=12, cutoff_len=96)
    return bundle.model, data, bundle.tokenizer.pad_token_id


def test_length_batches_respect_budget_and_cover_every_position_once():
    lengths = [5, 90, 7, 30, 30, 2, 64, 8, 200]
    batches = length_batches(lengths, max_tokens=100, max_rows=3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for b in batches:
        widths = [lengths[i] for i in b]
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(widths) <= 100)
    assert [lengths[i] for i in flat] == sorted(lengths)  # ordered by length, so neighbours pad little
    assert [b.tolist() for b in batches][-1] == [8]  # a row longer than the budget is a batch of its own


@pytest.mark.parametrize("impl", ["plain", "chunked"])
def test_bucketed_scores_equal_one_at_a_time_in_the_original_order(setup, impl):
    model, data, pad = setup
    ids = np.random.default_rng(0).permutation(len(data))[:40]
    previous = loss_settings()
    configure_losses(LossSettings(impl))
    try:
        bucketed = sample_losses(
            model, data, ids, batch_size=None, pad_token_id=pad, device="cpu", max_tokens=600
        )
        single = sample_losses(model, data, ids, batch_size=1, pad_token_id=pad, device="cpu", max_tokens=600)
        unbucketed = sample_losses(
            model, data, ids, batch_size=64, pad_token_id=pad, device="cpu", lockstep=True
        )
    finally:
        configure_losses(previous)
    assert bucketed.shape == (40,) and bucketed.min() > 0
    torch.testing.assert_close(bucketed, single, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bucketed, unbucketed, rtol=1e-5, atol=1e-6)
    # the order is the caller's: reversing the ids reverses the scores
    reverse = sample_losses(
        model, data, ids[::-1].copy(), batch_size=None, pad_token_id=pad, device="cpu", max_tokens=600
    )
    torch.testing.assert_close(reverse, bucketed.flip(0), rtol=1e-5, atol=1e-6)


def test_bucketed_evaluation_equals_fixed_batches(setup):
    model, data, pad = setup
    bucketed = evaluate(
        model, data, batch_size=None, max_tokens=500, pad_token_id=pad, device=torch.device("cpu")
    )
    fixed = evaluate(model, data, batch_size=7, pad_token_id=pad, device=torch.device("cpu"), lockstep=True)
    assert bucketed.keys() == fixed.keys() and len(bucketed) > 2
    for key in fixed:
        assert bucketed[key] == pytest.approx(fixed[key], rel=1e-6), key


def test_automatic_scoring_budget_is_capped_lower_on_a_cpu(setup):
    """Batches past a few thousand tokens were slower on a CPU (vs_dataflex README): the automatic budget
    there stops at MAX_AUTO_TOKENS_CPU; other devices keep MAX_AUTO_TOKENS."""
    from dataflex.train.signals import batching

    model = setup[0]
    assert batching.auto_max_tokens(model, "cpu", 32, full_logits=False) == batching.MAX_AUTO_TOKENS_CPU
    assert batching.MIN_AUTO_TOKENS <= batching.MAX_AUTO_TOKENS_CPU < batching.MAX_AUTO_TOKENS
