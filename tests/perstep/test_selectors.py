"""Per-step selectors on the tiny model: their signals equal explicit computations (per-sample gradients
from a batch-size-1 loop, plain forwards), and their choices are the rules applied to those numbers."""

from __future__ import annotations

import pytest
import torch
from select_helpers import loop_gradients, make_setup, shared_setup

from dataflex.data.processor import collate
from dataflex.train.perstep.rules import greats_greedy, top_b
from dataflex.train.perstep.selectors import (
    Candidates,
    GradNormPerStep,
    GreatsPerStep,
    MaxLossPerStep,
    RhoLossPerStep,
    UniformPerStep,
    concat_batches,
)
from dataflex.train.signals.losses import per_sample_losses

IDS = [0, 21, 42, 63, 84, 99, 5, 17]
VAL = [1, 7, 13]


def _losses(model, batch) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return per_sample_losses(logits, batch["labels"]).mean.double()


def test_greats_signals_and_choice_equal_explicit_per_sample_gradients():
    for kind in ("full", "lora"):
        s = shared_setup(kind)
        explicit = loop_gradients(s.model, s.train, IDS, s.pad).double()
        val_grad = loop_gradients(s.model, s.eval, VAL, s.pad).double().mean(0)
        val_batch = collate([s.eval[i] for i in VAL], s.pad)
        selector = GreatsPerStep(s.pad, validation=lambda step, v=val_batch: v)
        cand = Candidates(s.batch(IDS), step=3, lr=0.05)
        val_dots, gram = selector.signals(s.model, cand)
        ref_dots, ref_gram = explicit @ val_grad, explicit @ explicit.T
        assert float((val_dots.double() - ref_dots).abs().max() / ref_dots.abs().max()) < 1e-4
        assert float((gram.double() - ref_gram).abs().max() / ref_gram.abs().max()) < 1e-4
        # an lr where the interaction matters: the greedy choice differs from plain top-b alignment
        lr = float(ref_dots.abs().max() / ref_gram.diagonal().max())
        cand.lr = lr
        choice = selector.choose(s.model, cand, 4)
        assert choice.indices == greats_greedy(ref_dots, ref_gram, 4, lr).indices
        assert choice.indices != top_b(ref_dots, 4).indices  # the interaction term changed the pick


def test_max_loss_and_grad_norm_rank_explicit_numbers():
    s = shared_setup("full")
    batch = s.batch(IDS)
    cand = Candidates(batch, step=0, lr=1e-3)
    assert MaxLossPerStep().choose(s.model, cand, 3).indices == top_b(_losses(s.model, batch), 3).indices
    norms = loop_gradients(s.model, s.train, IDS, s.pad).double().norm(dim=1)
    choice = GradNormPerStep().choose(s.model, cand, 3)
    assert choice.indices == top_b(norms, 3).indices
    torch.testing.assert_close(
        torch.tensor(choice.scores, dtype=torch.float64), norms[choice.indices], rtol=1e-4, atol=0
    )


def test_rho_loss_subtracts_the_reference_and_caches_it_by_sample_id():
    s = shared_setup("full")
    reference = make_setup("full", seed=1).model
    calls = []
    reference.register_forward_hook(lambda *a: calls.append(1))
    selector = RhoLossPerStep(reference)
    batch = s.batch(IDS)
    choice = selector.choose(s.model, Candidates(batch, step=0, lr=1e-3), 3)
    rho = _losses(s.model, batch) - _losses(reference, batch)
    assert choice.indices == top_b(rho, 3).indices
    assert torch.allclose(torch.tensor(choice.scores, dtype=torch.float64), rho[choice.indices], atol=1e-5)
    forwards = len(calls)
    again = s.batch(IDS[2:] + [33])  # one new sample id: one more reference forward, of one row
    selector.choose(s.model, Candidates(again, step=1, lr=1e-3), 3)
    assert len(calls) == forwards + 1 and len(selector._cache) == len(IDS) + 1


def test_uniform_and_concat():
    s = shared_setup("lora")
    cand = Candidates(s.batch(IDS), step=5, lr=1e-3)
    assert UniformPerStep(seed=2).choose(s.model, cand, 4) == UniformPerStep(seed=2).choose(s.model, cand, 4)
    a, b = s.batch([0, 1]), s.batch([99])
    both = concat_batches(a, b, s.pad)
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    assert both["input_ids"].shape == (3, width)
    assert both["attention_mask"].sum() == a["attention_mask"].sum() + b["attention_mask"].sum()
    assert both["sample_ids"].tolist() == a["sample_ids"].tolist() + b["sample_ids"].tolist()


def test_validation_draw_is_seeded_by_step_and_keeps_to_the_target_domain():
    from dataflex.train.perstep.selectors import ValidationDraw

    s = shared_setup("lora")
    target = s.eval.domain_names.index("target")
    draw = ValidationDraw(s.eval, s.pad, val_size=3, seed=4, target_domain="target")
    a = draw(7)
    assert a["sample_ids"].tolist() == draw(7)["sample_ids"].tolist()
    assert set(a["domain_ids"].tolist()) == {target}
    assert any(draw(k)["sample_ids"].tolist() != a["sample_ids"].tolist() for k in range(8, 12))
    with pytest.raises(ValueError, match="not a domain"):
        ValidationDraw(s.eval, s.pad, val_size=3, seed=4, target_domain="nope")


def test_rho_loss_loads_its_reference_from_a_folder(tmp_path):
    s = shared_setup("full")
    reference = make_setup("full", seed=1).model
    reference.save_pretrained(tmp_path / "ref")
    selector = RhoLossPerStep(str(tmp_path / "ref"), tokenizer=s.tokenizer)
    batch = s.batch(IDS)
    torch.testing.assert_close(
        selector.reference_losses(batch, torch.device("cpu")), _losses(reference, batch), rtol=1e-5, atol=1e-6
    )
