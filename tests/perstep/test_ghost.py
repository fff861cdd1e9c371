"""Ghost inner products equal the dot products of explicit per-sample gradients (a batch-size-1 autograd
loop) on the tiny model, full (tied embedding/head, norms, padding) and LoRA, by every method."""

from __future__ import annotations

import pytest
import torch
from select_helpers import loop_gradients, shared_setup

from dataflex.data.processor import collate
from dataflex.train.signals.ghost import GhostGradients, ghost_gradients

IDS = [0, 21, 42, 63, 84, 99, 5]  # different lengths and domains: padding is exercised
VAL = [1, 7, 13]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("kind", ["full", "lora"])
@pytest.mark.parametrize("method", ["ghost", "materialize", "auto"])
def test_gram_and_validation_dots_equal_explicit_per_sample_gradients(kind, method):
    s = shared_setup(kind)
    explicit = loop_gradients(s.model, s.train, IDS, s.pad).double()
    explicit_val = loop_gradients(s.model, s.eval, VAL, s.pad).double()
    ghost = ghost_gradients(s.model, s.batch(IDS))
    val = ghost_gradients(s.model, collate([s.eval[i] for i in VAL], s.pad))

    gram = ghost.dots(method=method).double()
    assert gram.shape == (len(IDS), len(IDS))
    assert _rel(gram, explicit @ explicit.T) < 1e-4
    cross = ghost.dots(other=val, method=method).double()
    assert _rel(cross, explicit @ explicit_val.T) < 1e-4
    # rows / cols subsets and the diagonal
    sub = ghost.dots([4, 1], [6, 0, 2], method=method).double()
    assert _rel(sub, (explicit[[4, 1]] @ explicit[[6, 0, 2]].T)) < 1e-4
    norms = ghost.squared_norms(method=method).double()
    assert _rel(norms, explicit.square().sum(1)) < 1e-4


def test_full_model_uses_the_embedding_and_tied_head_cross_terms():
    s = shared_setup("full")
    ghost = ghost_gradients(s.model, s.batch(IDS[:3]))
    tied = [terms for name, terms in ghost.terms if "embed_tokens" in name]
    assert len(tied) == 1
    kinds = sorted("ids" if t.left_ids is not None else "dense" for t in tied[0])
    assert kinds == ["dense", "ids"]  # the head's (dense) and the embedding's (one-hot) use of one weight


def test_losses_of_the_same_forward_come_back():
    s = shared_setup("lora")
    ghost = ghost_gradients(s.model, s.batch(IDS))
    with torch.no_grad():
        from dataflex.train.signals.losses import per_sample_losses

        b = s.batch(IDS)
        ref = per_sample_losses(
            s.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]
        )
    assert ghost.losses is not None
    torch.testing.assert_close(ghost.losses.mean, ref.mean, rtol=1e-5, atol=1e-6)


def test_refuses_an_unknown_method_and_mismatched_batches():
    s = shared_setup("lora")
    ghost = ghost_gradients(s.model, s.batch(IDS[:2]))
    with pytest.raises(ValueError, match="method"):
        ghost.dots(method="exact")
    empty = GhostGradients.__new__(GhostGradients)
    empty.terms, empty.batch_size = [], 0
    with pytest.raises(ValueError, match="different parameters"):
        ghost.dots(other=empty)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_batch_gradient_equals_a_backward_of_the_weighted_loss_over_the_rows(kind):
    """The update the per-step trainer assembles from the candidate pass: rows 4, 1, 6 of a pass over 7
    rows (different lengths: padding), token-count weights, against a plain forward + backward of those 3
    rows alone (collated on their own, so padded to another width)."""
    s = shared_setup(kind)
    ghost = ghost_gradients(s.model, s.batch(IDS))
    rows = [4, 1, 6]
    assert ghost.losses is not None
    weights = ghost.losses.token_count[rows].float() / ghost.losses.token_count[rows].sum()
    assembled = dict((id(p), g) for p, g in ghost.batch_gradient(rows, weights))

    sub = s.batch([IDS[r] for r in rows])
    logits = s.model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"]).logits
    from dataflex.train.signals.losses import per_sample_losses

    losses = per_sample_losses(logits, sub["labels"])
    loss = losses.token_sum.sum() / losses.token_count.sum()
    params = [p for p in s.model.parameters() if p.requires_grad]
    plain = torch.autograd.grad(loss, params)
    assert set(assembled) == {id(p) for p in params}  # every trainable parameter is assembled
    flat_plain = torch.cat([g.reshape(-1) for g in plain]).double()
    flat_ours = torch.cat([assembled[id(p)].reshape(-1) for p in params]).double()
    assert float((flat_ours - flat_plain).norm() / flat_plain.norm()) < 1e-5
    for p, g in zip(params, plain):  # parameter by parameter, too (a small one cannot hide in the norm)
        torch.testing.assert_close(assembled[id(p)], g, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        ghost.batch_gradient(rows, weights[:2])
