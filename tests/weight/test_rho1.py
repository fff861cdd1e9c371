"""`component=rho1` (Lin et al. 2024): top-k% token selection by excess loss, parity on fixed numbers; with
ratio=1 it is exactly the plain token-mean loss; a missing reference model is a clear error."""

from __future__ import annotations

import pytest
import torch
from weight_helpers import component, recording_trainer_class, schema, tiny_bundle, train_tiny

from dataflex.config.component.weight import Rho1WeighterConfig
from dataflex.train.weighter.rho1_weighter import Rho1Weighter, rho1_selection

LOSSES = torch.tensor([2.0, 1.0, 3.0, 0.5, 4.0])
REF = torch.tensor([1.0, 1.5, 1.0, 0.5, 3.9])  # excess: [1.0, -0.5, 2.0, 0.0, 0.1]


@pytest.mark.parametrize(
    "ratio, kept, loss",
    [(0.4, [0, 2], 2.5), (0.6, [0, 2, 4], 3.0), (0.2, [2], 3.0), (1.0, [0, 1, 2, 3, 4], 2.1)],
)
def test_selection_parity(ratio, kept, loss):
    mask = rho1_selection(LOSSES, REF, ratio)
    assert torch.nonzero(mask).flatten().tolist() == kept
    x = LOSSES.clone().requires_grad_(True)
    value = (mask * x).sum() / mask.sum()
    (g,) = torch.autograd.grad(value, x)
    assert float(value.detach()) == pytest.approx(loss)
    assert g.tolist() == pytest.approx([1 / len(kept) if i in kept else 0.0 for i in range(5)])


def test_selection_keeps_at_least_one_token():
    assert rho1_selection(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), 0.01).tolist() == [0.0, 1.0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A reference model folder: the tiny model with another seed, saved as a plain HF model."""
    path = tmp_path_factory.mktemp("ref") / "model"
    bundle = tiny_bundle(seed=1)
    bundle.model.save_pretrained(path)
    bundle.tokenizer.save_pretrained(path)
    return str(path)


def token_mean_trainer_class():
    """Records like the others but always trains on the plain token-mean loss."""
    base = recording_trainer_class()

    class TokenMean(base):
        def weighting(self, step):
            return False

        def compute_loss(self, losses, batch, ctx):
            return losses.token_sum.sum() * ctx.world_size / ctx.global_tokens

    return TokenMean


def test_ratio_one_equals_plain_token_mean_loss(reference):
    comp = component(schema("rho1"), reference_model=reference, ratio=1.0)
    rho = train_tiny(comp, steps=2, warmup_step=0, per_device=4, accumulation=2)
    plain = train_tiny(
        comp, steps=2, warmup_step=0, per_device=4, accumulation=2, trainer_cls=token_mean_trainer_class()
    )
    for step in range(2):
        err = float((rho.grads[step] - plain.grads[step]).norm() / plain.grads[step].norm())
        assert err < 1e-5, f"step {step}: {err:.2e}"
        counts = rho.token_counts[step].double()
        torch.testing.assert_close(
            rho.weights[step], counts / counts.sum()
        )  # each sample weighs by its tokens


def test_selected_tokens_share_the_step_equally(reference):
    trainer = train_tiny(
        component(schema("rho1"), reference_model=reference, ratio=0.5),
        steps=2,
        warmup_step=1,
        per_device=4,
        accumulation=2,
    )
    w = trainer.weights[1]
    assert float(w.sum()) == pytest.approx(1.0)
    assert 0 < int((w > 0).sum()) <= len(w)
    assert "weight/selected_excess_mean" in trainer.metrics[1]


def test_missing_reference_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="component.reference_model"):
        Rho1Weighter()
    with pytest.raises(FileNotFoundError, match="component.reference_model"):
        Rho1Weighter(Rho1WeighterConfig(reference_model=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="component.ratio"):
        Rho1Weighter(Rho1WeighterConfig(reference_model=str(tmp_path), ratio=0.0))


def test_token_selection_applies_from_the_first_step_by_default(reference):
    """Issue 13 item 13: the paper selects tokens from the start; trainer.warmup_step (default 20) no longer
    delays rho1 unless component.warmup_step=null asks for it."""
    comp = component(schema("rho1"), reference_model=reference, ratio=0.5)
    paper = train_tiny(comp, steps=2, warmup_step=1, per_device=4, accumulation=2)
    assert (
        paper.warmup_step == 0 and paper.weights[0] is not None and paper.metrics[0]["weight/active"] == 1.0
    )
    delayed = train_tiny(
        component(schema("rho1"), reference_model=reference, ratio=0.5, warmup_step=None),
        steps=2,
        warmup_step=1,
        per_device=4,
        accumulation=2,
    )
    assert delayed.weights[0] is None and delayed.weights[1] is not None
