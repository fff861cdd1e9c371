"""The plan object (provenance per id) and the shared signal cache (one pass, per-sample staleness)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataflex.train.pipeline.plan import Plan
from dataflex.train.pipeline.signals import SignalCache


def test_plan_hands_out_its_ids_in_order_and_names_the_stages_of_each():
    plan = Plan(ids=[7, 3, 9, 1], chosen_by="mix:odm", filtered_by=["filter:loss"], ordered_by="reorder:saw")
    assert plan.provenance == "filter:loss>mix:odm>reorder:saw"
    assert plan.stages_of(9) == ["filter:loss", "mix:odm", "reorder:saw"]
    assert plan.stages_of(4) == []  # not in the plan
    assert plan.next(2).tolist() == [7, 3] and plan.remaining == 2
    with pytest.raises(RuntimeError, match="holds 2 more ids"):
        plan.next(3)
    again = Plan.from_state(plan.state_dict())
    assert again.next(2).tolist() == [9, 1] and again.provenance == plan.provenance
    assert Plan(ids=[1], chosen_by="uniform").provenance == "uniform"


def test_cache_computes_each_missing_id_once_and_respects_the_age():
    calls: list[list[int]] = []

    def losses(ids):
        calls.append(ids.tolist())
        return torch.tensor([10.0 * i for i in ids])

    cache = SignalCache(6, max_age=2)
    cache.done = 0
    assert cache.get("loss", np.array([4, 1, 4]), losses).tolist() == [40.0, 10.0, 40.0]
    assert calls == [[1, 4]]  # duplicates and order: one pass over the distinct missing ids
    cache.done = 2  # age 2 <= max_age: shared, no pass
    assert cache.get("loss", np.array([1, 2]), losses).tolist() == [10.0, 20.0]
    assert calls == [[1, 4], [2]]
    cache.done = 3  # ids 1 and 4 are 3 steps old now: recomputed; 2 (age 1) is not
    cache.get("loss", np.array([1, 2, 4]), losses)
    assert calls[-1] == [1, 4]
    assert (cache.passes, cache.computed, cache.served) == (3, 5, 3)
    restored = SignalCache(6, max_age=2)
    restored.load_state_dict(cache.state_dict())
    restored.done = 3
    restored.get("loss", np.array([1, 2, 4]), losses)
    assert len(calls) == 3  # nothing recomputed: the state came with the checkpoint


def test_disabled_cache_computes_every_request_and_vectors_keep_their_width():
    cache = SignalCache(4, enabled=False)
    n = []
    cache.get("loss", np.array([0, 1]), lambda ids: (n.append(1), torch.zeros(len(ids)))[1])
    cache.get("loss", np.array([0, 1]), lambda ids: (n.append(1), torch.zeros(len(ids)))[1])
    assert len(n) == 2
    shared = SignalCache(4)
    rows = shared.get(
        "embedding", np.array([2, 0]), lambda ids: torch.tensor(np.stack([ids * 1.0, ids * 2.0], 1))
    )
    assert rows.tolist() == [[2.0, 4.0], [0.0, 0.0]]


def test_selectors_scoring_goes_through_the_cache_once():
    """candidate_losses / embeddings of training items read the pipeline's cache: a second stage asking
    for the same ids gets the same numbers without a forward; other data (a target set) is never cached."""
    from dataflex.models.tiny import build_tiny_model
    from dataflex.train.selector.base_selector import SelectionContext
    from dataflex.train.selector.scoring import candidate_losses, embeddings

    from helpers import SMALL_MODEL, small_data

    bundle = build_tiny_model(**SMALL_MODEL)
    train = small_data(bundle.tokenizer, max_samples=8)
    other = small_data(bundle.tokenizer, max_samples=8, split="eval")
    cache = SignalCache(len(train))
    ctx = SelectionContext(train_data=train, pad_token_id=bundle.tokenizer.pad_token_id, signals=cache)
    plain = SelectionContext(train_data=train, pad_token_id=bundle.tokenizer.pad_token_id)
    ids = np.array([5, 1, 7, 1])
    first = candidate_losses(bundle.model, ids, ctx)
    again = candidate_losses(bundle.model, ids[:2], ctx)
    torch.testing.assert_close(first, candidate_losses(bundle.model, ids, plain))
    torch.testing.assert_close(again, first[:2])
    assert (cache.passes, cache.computed, cache.served) == (1, 3, 3)
    candidate_losses(bundle.model, ids, ctx, data=other)  # not the training data: computed, not cached
    assert cache.passes == 1
    e1 = embeddings(bundle.model, train, ids, ctx)
    e2 = embeddings(bundle.model, train, ids[1:2], ctx)
    torch.testing.assert_close(e2, e1[1:2])
    torch.testing.assert_close(e1, embeddings(bundle.model, train, ids, plain), rtol=1e-5, atol=1e-6)
    assert cache.passes == 2 and cache.values["embedding"].shape == (len(train), SMALL_MODEL["hidden_size"])


def test_doremi_sample_weights_by_reduction_on_hand_numbers():
    """One helper, two meanings: per-sample factors of mean 1 (pipeline) and the ledger's weights relative to
    the plain token mean (dynamic_mix), alpha = (0.2, 0.8), domains (0, 1, 1), tokens T = (10, 30)."""
    from dataflex.train.mixer.doremi import alpha_sample_weights

    alpha, domains, tokens = np.array([0.2, 0.8]), np.array([0, 1, 1]), np.array([10.0, 30.0])
    np.testing.assert_allclose(alpha_sample_weights(alpha, domains), [1 / 3, 4 / 3, 4 / 3])  # / mean 0.6
    token = alpha_sample_weights(alpha, domains, reduction="token", domain_tokens=tokens)
    np.testing.assert_allclose(token, [0.2 * 40 / 26, 0.8 * 40 / 26, 0.8 * 40 / 26])  # sum_d a_d T_d = 26
    mean = alpha_sample_weights(
        alpha, domains, reduction="token", domain_tokens=tokens, normalization="domain_mean"
    )
    np.testing.assert_allclose(mean, [0.2 * 40 / 10, 0.8 * 40 / 30, 0.8 * 40 / 30])
    with pytest.raises(ValueError, match="token needs domain_tokens"):
        alpha_sample_weights(alpha, domains, reduction="token")
