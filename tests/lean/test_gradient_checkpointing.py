"""trainer.gradient_checkpointing (HF's, non-reentrant) and trainer.loss_impl through the real loop: the same
losses and updates as without, for LoRA and for a dynamic trainer; per-sample gradient features refuse to
record under checkpointing in train mode and work in eval mode."""

from __future__ import annotations

import pytest
import torch
from weight_helpers import component, schema, train_tiny

from dataflex.models.tiny import build_tiny_model
from dataflex.train.activation_checkpointing import enable_gradient_checkpointing
from dataflex.train.signals.gradients import gradient_features
from dataflex.train.signals.losses import LossSettings, model_losses
from dataflex.utils.modes import eval_mode

from helpers import SMALL_MODEL, small_data


def lora_grads(checkpointing: bool):
    bundle = build_tiny_model(**SMALL_MODEL, finetuning_type="lora")
    model = bundle.model
    if checkpointing:
        enable_gradient_checkpointing(model)
    data = small_data(bundle.tokenizer, max_samples=4)
    from dataflex.data.processor import collate

    batch = collate([data[i] for i in range(6)], bundle.tokenizer.pad_token_id)
    model.train()
    losses = model_losses(model, batch, "cpu", LossSettings("chunked"))
    (losses.mean * torch.linspace(0.5, 2.0, 6)).sum().backward()
    return losses.token_sum.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad
    }


def test_lora_gradients_with_checkpointing_equal_without():
    loss_a, grads_a = lora_grads(False)
    loss_b, grads_b = lora_grads(True)
    torch.testing.assert_close(loss_b, loss_a)
    assert grads_a.keys() == grads_b.keys() and all("lora_" in n for n in grads_a)
    for name in grads_a:
        assert grads_b[name].abs().sum() > 0 or grads_a[name].abs().sum() == 0, (
            name
        )  # adapters still get grads
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_is_really_on():
    """In train mode a checkpointed layer's MLP runs twice per step (forward and recompute), once in eval."""
    bundle = build_tiny_model(**SMALL_MODEL, finetuning_type="lora")
    model = bundle.model
    enable_gradient_checkpointing(model)
    assert model.get_base_model().config.use_cache is False
    calls = []
    model.get_base_model().model.layers[0].mlp.register_forward_hook(lambda *a: calls.append(1))
    from dataflex.data.processor import collate

    batch = collate([small_data(bundle.tokenizer, max_samples=1)[0]], bundle.tokenizer.pad_token_id)
    model.train()
    model_losses(model, batch, "cpu").token_sum.sum().backward()
    assert len(calls) == 2
    calls.clear()
    with eval_mode(model):
        model_losses(model, batch, "cpu").token_sum.sum().backward()
    assert len(calls) == 1


def test_per_sample_gradient_features_refuse_in_train_mode_and_work_in_eval_mode():
    bundle = build_tiny_model(**SMALL_MODEL, finetuning_type="lora")
    model = bundle.model
    data = small_data(bundle.tokenizer, max_samples=2)
    from dataflex.data.processor import collate

    batch = collate([data[i] for i in range(3)], bundle.tokenizer.pad_token_id)
    with eval_mode(model):
        before = gradient_features(model, batch)
    enable_gradient_checkpointing(model)
    model.train()
    with pytest.raises(RuntimeError, match="gradient checkpointing"):
        gradient_features(model, batch)
    with eval_mode(model):
        after = gradient_features(model, batch)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-7)


def assert_same_run(a, b, tol=1e-5):
    assert len(a.grads) == len(b.grads) > 0
    for step, (ga, gb) in enumerate(zip(a.grads, b.grads)):
        assert float((ga - gb).norm() / gb.norm()) <= tol, f"step {step}"
    for (s1, v1, _), (s2, v2, _) in zip(a.loss_pairs, b.loss_pairs):
        assert s1 == s2 and v1 == pytest.approx(v2, rel=tol)


LINUPPER = {"strategy": "linupper", "temperature": 0.3}


@pytest.mark.parametrize(
    "variant",
    [
        dict(gradient_checkpointing=True),
        dict(loss_impl="chunked"),
        dict(loss_impl="chunked", gradient_checkpointing=True, loss_chunk_size=7),
    ],
)
def test_dynamic_weight_trainer_same_losses_and_updates(variant):
    """dynamic_weight with non-uniform loss weights: checkpointing and the chunked loss change nothing but
    memory (every step's applied gradient within 1e-5 relative)."""
    reference = train_tiny(
        component(schema("loss"), **LINUPPER),
        steps=3,
        warmup_step=1,
        per_device=4,
        accumulation=2,
        loss_impl="plain",
    )
    other = train_tiny(
        component(schema("loss"), **LINUPPER),
        steps=3,
        warmup_step=1,
        per_device=4,
        accumulation=2,
        **{"loss_impl": "plain", **variant},
    )
    w = reference.weights[2]
    assert float(w.max() / w.min()) > 2.0  # really weighted
    assert_same_run(other, reference)
