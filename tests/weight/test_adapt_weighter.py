"""`component=adapt`: parity on fixed embeddings, anchors refreshed on schedule and carried by state, bad
input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from weight_helpers import component, schema, tiny_bundle, tiny_data, train_tiny

from dataflex.config.component.weight import AdaptWeighterConfig
from dataflex.train.signals.embeddings import sample_embeddings
from dataflex.train.weighter.adapt_weighter import AdaptWeighter, adapt_weights
from dataflex.train.weighter.base_weighter import WeightContext

ANCHORS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
EMB = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
# cosine to each anchor: rows [1,0] [0,1] [.6,.8] [-1,0]; mean over anchors -> [.5, .5, .7, -.5], max -> [1,
# 1, .8, 0]


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x)))


def test_mean_similarity_parity():
    w, sims = adapt_weights(EMB, ANCHORS, tau=0.5)
    assert sims.tolist() == pytest.approx([0.5, 0.5, 0.7, -0.5])
    u = sigmoid([1.0, 1.0, 1.4, -1.0])
    np.testing.assert_allclose(w.numpy(), u / u.sum(), rtol=1e-6)
    assert w.tolist() == pytest.approx([0.288586, 0.288586, 0.316662, 0.106165], abs=2e-6)


def test_unnormalised_weights_are_the_ports_per_sample_learning_rate():
    """Issue 13 item 6: normalize=false keeps the sigmoid values u_i and the loss is their batch mean of u_i
    l_i."""
    w, _ = adapt_weights(EMB, ANCHORS, tau=0.5, normalize=False)
    np.testing.assert_allclose(w.numpy(), sigmoid([1.0, 1.0, 1.4, -1.0]) / 4, rtol=1e-6)


def test_position_weighted_pooling_on_fixed_numbers():
    """The k-th real token weighs k: real tokens [a, b, c] -> (1a + 2b + 3c) / 6; padding ignored."""
    from dataflex.train.signals.embeddings import pool_hidden

    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 3.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 1, 0]])
    torch.testing.assert_close(
        pool_hidden(hidden, mask, "position_weighted"), torch.tensor([[10 / 6, 11 / 6]])
    )
    torch.testing.assert_close(pool_hidden(hidden, mask, "mean"), torch.tensor([[4 / 3, 4 / 3]]))
    with pytest.raises(ValueError, match="pooling"):
        pool_hidden(hidden, mask, "last")


def test_max_similarity_and_clip_parity():
    w, _ = adapt_weights(EMB, ANCHORS, tau=0.5, aggregate="max")
    u = sigmoid([2.0, 2.0, 1.6, 0.0])
    np.testing.assert_allclose(w.numpy(), u / u.sum(), rtol=1e-6)
    w, _ = adapt_weights(EMB, ANCHORS, tau=0.5, clip_min=0.3, clip_max=0.75)
    u = np.clip(sigmoid([1.0, 1.0, 1.4, -1.0]), 0.3, 0.75)
    np.testing.assert_allclose(w.numpy(), u / u.sum(), rtol=1e-6)


def test_centred_similarity_parity():
    # centre = mean of [.5, .5, .7, -.5] = .3 -> (s - .3) / .5 = [.4, .4, .8, -1.6]
    w, _ = adapt_weights(EMB, ANCHORS, tau=0.5, center=True)
    u = sigmoid([0.4, 0.4, 0.8, -1.6])
    np.testing.assert_allclose(w.numpy(), u / u.sum(), rtol=1e-6)


def test_raw_sigmoid_saturates_on_anisotropic_embeddings_and_centring_does_not():
    sims_high = torch.nn.functional.normalize(torch.tensor([[1.0, 0.30], [1.0, 0.35], [1.0, 0.50]]), dim=1)
    anchor = torch.tensor([[1.0, 0.4]]) / torch.tensor([[1.0, 0.4]]).norm()
    raw, _ = adapt_weights(sims_high, anchor, tau=0.001)
    centred, _ = adapt_weights(sims_high, anchor, tau=0.001, center=True)
    np.testing.assert_allclose(raw.numpy(), np.full(3, 1 / 3), rtol=1e-6)
    assert float(centred.max() - centred.min()) > 0.3


def test_more_similar_samples_weigh_more_and_tau_sharpens():
    w_soft, _ = adapt_weights(EMB, ANCHORS, tau=2.0)
    w_sharp, _ = adapt_weights(EMB, ANCHORS, tau=0.1)
    assert w_sharp[2] > w_sharp[0] > w_sharp[3]
    assert float(w_sharp.max() - w_sharp.min()) > float(w_soft.max() - w_soft.min())


@pytest.fixture(scope="module")
def setup():
    bundle = tiny_bundle()
    train, evaluation = tiny_data(bundle.tokenizer, max_samples=8)
    return bundle, train, evaluation


def make(setup, **kwargs):
    bundle, train, evaluation = setup
    kwargs.setdefault("reuse_forward", False)  # called directly here, outside a training forward
    return AdaptWeighter(
        AdaptWeighterConfig(**kwargs),
        train_data=train,
        eval_data=evaluation,
        pad_token_id=bundle.tokenizer.pad_token_id,
    )


def ctx_for(step, ids):
    ids = torch.as_tensor(ids)
    return WeightContext(
        global_step=step,
        total_steps=10,
        warmup_steps=0,
        sample_ids=ids,
        domain_ids=torch.zeros_like(ids),
        token_count=torch.ones_like(ids),
        domain_names=["d"],
        local_slice=slice(0, len(ids)),
    )


def test_weights_follow_similarity_to_target_anchors(setup):
    bundle, train, evaluation = setup
    w = make(setup, anchor_domains=["target"], tau=0.05, refresh_interval=3)
    ids = [0, 9, 17, 30]
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    loss = w.get_weighted_loss(x, ctx=ctx_for(0, ids), model=bundle.model)
    (g,) = torch.autograd.grad(loss, x)
    target = evaluation.domain_names.index("target")
    anchors = sample_embeddings(
        bundle.model,
        evaluation,
        evaluation.domain_rows(target),
        batch_size=64,
        pad_token_id=bundle.tokenizer.pad_token_id,
    )
    emb = sample_embeddings(
        bundle.model, train, ids, batch_size=64, pad_token_id=bundle.tokenizer.pad_token_id
    )
    expected, _ = adapt_weights(emb, anchors, 0.05, center=True)
    np.testing.assert_allclose(g.numpy(), expected.numpy(), rtol=1e-5)
    assert float(g.sum()) == pytest.approx(1.0)


def test_anchors_refresh_every_interval_and_state_resumes(setup):
    bundle, _, _ = setup
    a = make(setup, refresh_interval=3, max_anchors=5)
    x = torch.ones(2, requires_grad=True)
    for step in range(5):
        a.get_weighted_loss(x, ctx=ctx_for(step, [0, 1]), model=bundle.model)
        assert a.refreshed_at == (0 if step < 3 else 3)
    assert a.refreshes == 2 and a.anchors.shape[0] == 5
    b = make(setup, refresh_interval=3, max_anchors=5)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():  # change the model: a refresh would change the anchors
        for p in bundle.model.parameters():
            p.add_(0.01)
    b.get_weighted_loss(x, ctx=ctx_for(5, [0, 1]), model=bundle.model)
    assert b.refreshes == 2 and torch.equal(b.anchors, a.anchors)  # not due before step 6
    b.get_weighted_loss(x, ctx=ctx_for(6, [0, 1]), model=bundle.model)
    assert b.refreshes == 3 and not torch.equal(b.anchors, a.anchors)


def test_no_anchor_set_is_a_clear_error(setup):
    bundle, train, _ = setup
    with pytest.raises(ValueError, match="anchor set"):
        AdaptWeighter(train_data=train, eval_data=None, pad_token_id=0)
    with pytest.raises(ValueError, match="anchor_domains.*not in the eval split"):
        make(setup, anchor_domains=["nope"])


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"tau": 0.0}, "component.tau"),
        ({"tau": -1.0}, "component.tau"),
        ({"refresh_interval": 0}, "component.refresh_interval"),
        ({"clip_min": 0.8, "clip_max": 0.2}, "component.clip_min"),
        ({"aggregate": "median"}, "component.aggregate"),
    ],
)
def test_bad_parameters_name_the_key(setup, kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        make(setup, **kwargs)


def test_reusing_the_training_forward_gives_the_same_weights():
    """Embeddings pooled from the training forward's last hidden state = a separate sample_embeddings pass."""
    params = dict(tau=0.02, refresh_interval=2, max_anchors=16)
    reused = train_tiny(
        component(schema("adapt"), reuse_forward=True, **params),
        steps=3,
        warmup_step=1,
        per_device=4,
        accumulation=2,
    )
    separate = train_tiny(
        component(schema("adapt"), reuse_forward=False, **params),
        steps=3,
        warmup_step=1,
        per_device=4,
        accumulation=2,
    )
    for a, b in zip(reused.weights[1:], separate.weights[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    assert float(reused.weights[2].max() / reused.weights[2].min()) > 1.05
    for ga, gb in zip(reused.grads, separate.grads):
        assert float((ga - gb).norm() / gb.norm()) < 1e-5
