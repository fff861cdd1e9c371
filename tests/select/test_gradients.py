"""Batched per-sample gradient features equal a batch-size-1 autograd loop; Adam preconditioning matches
the live AdamW update; projections are block-invariant and track exact cosines."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from select_helpers import loop_gradients, make_setup, shared_setup, step_adamw

from dataflex.train.signals.gradients import (
    AdamPreconditioner,
    collect_gradient_features,
    gradient_features,
    num_trainable,
    trainable_parameters,
)
from dataflex.train.signals.projection import RandomProjector

# Rows of different lengths and domains, so padding is exercised.
IDS = [0, 21, 42, 63, 84, 99, 5]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).max())


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_batched_per_sample_gradients_equal_a_batch_size_one_loop(kind):
    s = shared_setup(kind)
    batched = gradient_features(s.model, s.batch(IDS))
    reference = loop_gradients(s.model, s.train, IDS, s.pad)
    assert batched.shape == (len(IDS), num_trainable(s.model))
    assert reference.norm(dim=1).min() > 0
    assert _rel_err(batched, reference) < 1e-4


def test_full_model_covers_tied_embeddings_and_norms():
    tiny = shared_setup("full")
    names = [n for n, _ in trainable_parameters(tiny.model)]
    assert any("embed_tokens" in n for n in names) and any("norm" in n for n in names)
    assert tiny.model.lm_head.weight is tiny.model.model.embed_tokens.weight  # one tensor, two modules


def test_lora_features_cover_only_the_adapters():
    tiny_lora = shared_setup("lora")
    names = [n for n, _ in trainable_parameters(tiny_lora.model)]
    assert names and all("lora_" in n for n in names)


def test_summed_and_weighted_losses_match_the_loop():
    tiny = shared_setup("full")
    weights = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5, 3.0, -0.25])
    batched = gradient_features(tiny.model, tiny.batch(IDS), reduction="sum", weights=weights)
    reference = loop_gradients(tiny.model, tiny.train, IDS, tiny.pad, reduction="sum", weights=weights)
    nonzero = weights != 0
    assert _rel_err(batched[nonzero], reference[nonzero]) < 1e-4
    assert batched[~nonzero].abs().max() == 0


def test_adam_preconditioning_is_the_next_adamw_step():
    """Γ(z) of a single sample must equal the direction AdamW itself takes on that sample's gradient."""
    s = make_setup("full", seed=3)
    opt = step_adamw(s.model, s.train, np.arange(0, 100, 7), s.pad)
    lr = opt.param_groups[0]["lr"]
    gamma = gradient_features(s.model, s.batch([11]), preconditioner=AdamPreconditioner(opt))[0]
    before = torch.cat([p.detach().reshape(-1).clone() for _, p in trainable_parameters(s.model)])
    s.model.train()
    batch = s.batch([11])
    from dataflex.train.signals.losses import per_sample_losses

    logits = s.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    per_sample_losses(logits, batch["labels"]).mean.sum().backward()
    opt.step()
    after = torch.cat([p.detach().reshape(-1) for _, p in trainable_parameters(s.model)])
    assert torch.allclose((before - after) / lr, gamma, rtol=1e-3, atol=1e-5)


def test_adam_without_state_uses_zero_moments():
    tiny = shared_setup("full")
    params = [p for _, p in trainable_parameters(tiny.model)]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.8, 0.9), eps=1e-6)
    g = torch.randn(2, *params[1].shape)
    out = AdamPreconditioner(opt)(params[1], g)
    # step 1 with zero moments: m̂ = g, v̂ = g², so Γ = g / (|g| + ε)
    assert torch.allclose(out, g / (g.abs() + 1e-6), atol=1e-6)
    raw = AdamPreconditioner(opt, bias_correction=False)(params[1], g)
    assert torch.allclose(raw, 0.2 * g / ((0.1 * g.square()).sqrt() + 1e-6), atol=1e-6)


def test_adam_code_variant_is_the_official_less_formula():
    """Issue 13 item 9: LESS's collect_grad_reps uses beta1 .9, beta2 .999, eps 1e-8 inside the root, no bias
    correction, whatever the optimizer's own betas/eps. m = .1, v = .01, g = .5: m' = .9*.1 + .1*.5 = .14,
    v' = .999*.01 + .001*.25 = .01024, out = .14 / sqrt(.01024 + 1e-8) = 1.3834..."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-3, betas=(0.5, 0.5), eps=0.1)  # ignored by the code variant
    opt.state[param] = {
        "step": torch.tensor(7.0),
        "exp_avg": torch.tensor([0.1]),
        "exp_avg_sq": torch.tensor([0.01]),
    }
    out = AdamPreconditioner(opt, variant="code")(param, torch.tensor([[0.5]]))
    assert out.item() == pytest.approx(0.14 / math.sqrt(0.01024 + 1e-8), rel=1e-6)
    paper = AdamPreconditioner(opt)(
        param, torch.tensor([[0.5]])
    )  # the optimizer's betas .5/.5, eps .1, step 8
    m, v = (0.5 * 0.1 + 0.5 * 0.5) / (1 - 0.5**8), (0.5 * 0.01 + 0.5 * 0.25) / (1 - 0.5**8)
    assert paper.item() == pytest.approx(m / (math.sqrt(v) + 0.1), rel=1e-6)
    with pytest.raises(ValueError, match="variant"):
        AdamPreconditioner(opt, variant="other")


def test_adam_features_before_the_first_step_warn(caplog):
    from dataflex.config.component.select import LessSelectorConfig
    from dataflex.train.selector import LessSelector

    tiny = shared_setup("full")
    sel = LessSelector(tiny.train, None, None, "unused", config=LessSelectorConfig(target_domain="target"))
    sel.bind(tiny.context())
    opt = torch.optim.AdamW([p for _, p in trainable_parameters(tiny.model)], lr=1e-3)
    with caplog.at_level(logging.WARNING, logger="dataflex"):
        sel.train_features(tiny.model, np.arange(2), opt)
    assert "sign gradients" in caplog.text


@pytest.mark.parametrize("kind", ["sparse", "rademacher", "gaussian"])
def test_projection_does_not_depend_on_how_the_vector_is_cut(kind):
    x = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    proj = RandomProjector(1000, 64, seed=5, kind=kind, chunk_size=128)
    whole = proj.project(x)
    cuts = [0, 7, 300, 301, 999, 1000]
    blocks = proj.project_blocks([x[:, a:b] for a, b in zip(cuts, cuts[1:])], batch=3)
    assert torch.allclose(whole, blocks, atol=1e-5)
    other_seed = RandomProjector(1000, 64, seed=6, kind=kind, chunk_size=128).project(x)
    assert not torch.allclose(whole, other_seed)
    if kind == "sparse":  # one (bucket, sign) per coordinate: O(dim), like one gradient
        assert sum(b.numel() for b, _ in proj._sparse.values()) == 1000
    else:  # a dense matrix is only ever held one chunk at a time
        assert proj._cached[1].shape == (1000 - 7 * 128, 64)


@pytest.mark.parametrize("kind,dim", [("sparse", 1024), ("rademacher", 1024), ("gaussian", 1024)])
def test_projected_cosine_tracks_exact_cosine(kind, dim):
    tiny_lora = shared_setup("lora")
    ids = list(range(0, 100, 4))
    exact = collect_gradient_features(
        tiny_lora.model, tiny_lora.train, ids, batch_size=8, pad_token_id=tiny_lora.pad
    )
    proj = RandomProjector(num_trainable(tiny_lora.model), dim, seed=1, kind=kind)
    projected = collect_gradient_features(
        tiny_lora.model, tiny_lora.train, ids, batch_size=8, pad_token_id=tiny_lora.pad, projector=proj
    )
    cos_exact = (exact @ exact.T).flatten()
    cos_proj = (projected @ projected.T).flatten()
    assert float((cos_exact - cos_proj).abs().mean()) < 0.05
    assert float(np.corrcoef(cos_exact.numpy(), cos_proj.numpy())[0, 1]) > 0.95


def test_features_do_not_touch_gradients_or_mode():
    tiny = shared_setup("full")
    tiny.model.train()
    collect_gradient_features(tiny.model, tiny.train, [1, 2, 3], batch_size=2, pad_token_id=tiny.pad)
    assert tiny.model.training
    assert all(p.grad is None for p in tiny.model.parameters())
    tiny.model.eval()
