"""Kronecker-factored (LoGra) features: equal to projecting the exact per-sample gradients with
R_out ⊗ R_in, inner products unbiased, cosines tracked, and refused with Adam preconditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from select_helpers import loop_gradients, shared_setup

from dataflex.config.component.select import LessSelectorConfig
from dataflex.train.signals.gradients import AdamPreconditioner, collect_gradient_features, gradient_features
from dataflex.train.signals.kronecker import KroneckerProjector

IDS = [0, 21, 42, 63, 84, 99, 5]


def _project_exact(projector: KroneckerProjector, flat: torch.Tensor) -> torch.Tensor:
    """Reference: cut the exact (B, P) per-sample gradients per parameter and apply R_out G R_in^T."""
    out, start = [], 0
    for _, p in projector.params:
        g = flat[:, start : start + p.numel()].reshape(-1, *p.shape)
        start += p.numel()
        r_out, r_in = projector.factors[id(p)]
        if p.dim() == 2:
            g = g if r_out is None else torch.einsum("ko,boi->bki", r_out, g)
            g = g if r_in is None else torch.einsum("bki,ji->bkj", g, r_in)
        else:
            g = g.reshape(len(g), -1) if r_in is None else g.reshape(len(g), -1) @ r_in.T
        out.append(g.reshape(len(g), -1))
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_kronecker_features_equal_the_projected_exact_gradients(kind):
    s = shared_setup(kind)
    projector = KroneckerProjector(s.model, 4096, seed=3)
    reference = _project_exact(projector, loop_gradients(s.model, s.train, IDS, s.pad))
    features = gradient_features(s.model, s.batch(IDS), projector=projector)
    assert features.shape == (len(IDS), projector.proj_dim)
    assert float(((features - reference).norm(dim=1) / reference.norm(dim=1)).max()) < 1e-4


def test_block_sizes_follow_the_budget():
    s = shared_setup("full")
    projector = KroneckerProjector(s.model, 4096, seed=0)
    matrices = [p for _, p in projector.params if p.dim() == 2]
    k = projector.factor_dim
    assert k * k * len(matrices) <= 4096 < (k + 1) ** 2 * len(matrices)
    for _, p in projector.params:
        offset, size = projector.offsets[id(p)]
        expected = min(k, p.shape[0]) * min(k, p.shape[1]) if p.dim() == 2 else min(k * k, p.numel())
        assert size == expected
    assert sum(size for _, size in projector.offsets.values()) == projector.proj_dim
    # a side no longer than k is kept exactly: LoRA's rank-8 sides have identity factors
    lora = KroneckerProjector(shared_setup("lora").model, 4096, seed=0)
    assert any(r is None for pair in lora.factors.values() for r in pair)


def test_inner_products_are_unbiased_over_seeds():
    s = shared_setup("lora")
    exact = loop_gradients(s.model, s.train, IDS[:3], s.pad)
    target = float(exact[0] @ exact[1])
    batch = s.batch(IDS[:3])
    estimates = []
    for seed in range(40):
        f = gradient_features(s.model, batch, projector=KroneckerProjector(s.model, 512, seed=seed))
        estimates.append(float(f[0] @ f[1]))
    stderr = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - target) < 4 * stderr + 1e-3 * abs(target)
    assert np.std(estimates) > 0  # really random, not the identity


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_kronecker_cosine_tracks_exact_cosine(kind):
    s = shared_setup(kind)
    ids = list(range(0, 100, 4))
    exact = collect_gradient_features(s.model, s.train, ids, batch_size=8, pad_token_id=s.pad)
    projected = collect_gradient_features(
        s.model,
        s.train,
        ids,
        batch_size=8,
        pad_token_id=s.pad,
        projector=KroneckerProjector(s.model, 8192, seed=1),
    )
    cos_exact, cos_proj = (exact @ exact.T).flatten(), (projected @ projected.T).flatten()
    assert float((cos_exact - cos_proj).abs().mean()) < 0.05
    assert float(np.corrcoef(cos_exact.numpy(), cos_proj.numpy())[0, 1]) > 0.95


def test_kronecker_refuses_adam_preconditioning():
    s = shared_setup("lora")
    optimizer = torch.optim.AdamW([p for _, p in KroneckerProjector(s.model, 64).params])
    with pytest.raises(ValueError, match="preconditioned"):
        gradient_features(
            s.model,
            s.batch(IDS),
            projector=KroneckerProjector(s.model, 64),
            preconditioner=AdamPreconditioner(optimizer),
        )
    with pytest.raises(ValueError, match="gradient_type=sgd"):
        LessSelectorConfig(target_domain="target", proj_type="kronecker", gradient_type="adam")
    LessSelectorConfig(target_domain="target", proj_type="kronecker", gradient_type="sgd")
