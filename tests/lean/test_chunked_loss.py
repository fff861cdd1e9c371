"""Chunked per-sample losses (through the LM head in chunks, logits recomputed in backward) equal the plain
full-logit ones, values and gradients, for full fine-tuning and LoRA, with prompt/padding label masking."""

from __future__ import annotations

import copy

import pytest
import torch

from dataflex.data.processor import IGNORE_INDEX
from dataflex.models.tiny import build_tiny_model
from dataflex.train.signals.chunked_ce import chunked_linear_cross_entropy
from dataflex.train.signals.losses import (
    LossSettings,
    head_path,
    liger_weighting_error,
    model_losses,
)

SMALL = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2
)


def masked_batch(vocab: int, batch: int = 3, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids with a masked prompt, right padding and one row without any supervised token."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, length), generator=gen)
    attention = torch.ones_like(ids)
    attention[1, 8:] = 0
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX
    labels[attention == 0] = IGNORE_INDEX
    labels[2] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def assert_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5, name: str = "") -> None:
    """Relative error in norm: ||actual - expected|| <= rel * ||expected|| (elementwise checks would fail on
    entries near 0, where both paths differ only by float32 rounding of the cross entropy)."""
    err = float((actual.double() - expected.double()).norm())
    assert err <= rel * float(expected.double().norm()) + 1e-12, (
        f"{name}: relative error {err / float(expected.double().norm()):.2e}"
    )


def weighted_grads(model, batch, impl: str, chunk: int = 5) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample losses and the gradient of a non-uniformly weighted mix of per-sample/per-token losses."""
    model.zero_grad(set_to_none=True)
    losses = model_losses(model, batch, "cpu", LossSettings(impl=impl, chunk_size=chunk))
    tokens = torch.linspace(0.5, 1.5, losses.token_loss.numel()).view_as(losses.token_loss)
    objective = (losses.mean * torch.tensor([0.3, 1.7, 0.9])).sum() + (losses.token_loss * tokens).sum() / 10
    objective.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return torch.stack([losses.token_sum.detach(), losses.token_count.float()]), grads


@pytest.mark.parametrize("finetuning", ["full", "lora"])
@pytest.mark.parametrize("tied", [True, False])
def test_chunked_losses_and_gradients_equal_plain(finetuning, tied):
    model = build_tiny_model(**SMALL, finetuning_type=finetuning, tie_word_embeddings=tied).model.double()
    batch = masked_batch(model.config.vocab_size)
    plain_losses, plain = weighted_grads(model, batch, "plain")
    chunk_losses, chunked = weighted_grads(model, batch, "chunked")
    assert head_path(model, LossSettings("chunked"), batch).kind == "linear"
    assert_rel(chunk_losses, plain_losses, 1e-5)
    assert plain_losses[1].tolist() == [8.0, 4.0, 0.0]  # masking honoured (prompt, padding, empty row)
    assert plain.keys() == chunked.keys() and plain
    for name in plain:
        assert_rel(chunked[name], plain[name], 1e-5, name)
    if finetuning == "full":
        assert "lm_head.weight" in chunked or "model.embed_tokens.weight" in chunked


def test_float32_model_matches_within_1e5():
    """The model in float32 (as on CPU): chunked equals plain within rel 1e-5 (losses and gradients)."""
    model = build_tiny_model(**SMALL).model
    batch = masked_batch(model.config.vocab_size, seed=1)
    plain_losses, plain = weighted_grads(model, batch, "plain")
    chunk_losses, chunked = weighted_grads(model, batch, "chunked", chunk=7)
    assert_rel(chunk_losses, plain_losses, 1e-5)
    for name in plain:
        assert_rel(chunked[name], plain[name], 1e-5, name)


def test_lora_on_the_head_uses_the_checkpointed_module_path():
    """A LoRA-wrapped lm_head is no plain Linear: each chunk runs it under checkpoint; same numbers."""
    model = build_tiny_model(
        **SMALL, finetuning_type="lora", tie_word_embeddings=False, lora_target=["q_proj", "lm_head"]
    ).model.double()
    batch = masked_batch(model.config.vocab_size, seed=2)
    plain_losses, plain = weighted_grads(model, batch, "plain")
    chunk_losses, chunked = weighted_grads(model, batch, "chunked")
    assert head_path(model, LossSettings("chunked"), batch).kind == "module"
    assert_rel(chunk_losses, plain_losses, 1e-5)
    assert any("lm_head" in n for n in chunked)
    for name in plain:
        assert_rel(chunked[name], plain[name], 1e-5, name)


def test_softcap_and_bias_in_the_head_function():
    """The autograd Function alone: soft-capped, scaled, biased head; per-token weights in the gradient."""
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(11, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(50, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 50, (11,), generator=gen)
    y[[0, 5]] = IGNORE_INDEX
    weights = torch.rand(11, generator=gen, dtype=torch.float64)

    def plain():
        z = torch.tanh((h @ w.t() + b) * 0.7 / 3.0) * 3.0
        return torch.nn.functional.cross_entropy(z, y, ignore_index=IGNORE_INDEX, reduction="none")

    expected = plain()
    g_expected = torch.autograd.grad((expected * weights).sum(), (h, w, b))
    got = chunked_linear_cross_entropy(h, w, b, y, chunk_size=4, scale=0.7, softcap=3.0)
    g_got = torch.autograd.grad((got * weights).sum(), (h, w, b))
    assert got.dtype == torch.float32 and (got[[0, 5]] == 0).all()
    assert_rel(got, expected, 1e-6)  # logits are float32 inside, as in the plain path
    for a, e, name in zip(g_got, g_expected, ("hidden", "weight", "bias")):
        assert_rel(a, e, 1e-5, name)


def test_frozen_head_takes_the_hidden_gradient_in_forward(monkeypatch):
    """A frozen head (LoRA): dL/dh is computed per chunk in forward and only scaled by each token's upstream
    gradient in backward (no logits recomputed), equal to the plain gradient with per-token weights."""
    from dataflex.train.signals import chunked_ce

    gen = torch.Generator().manual_seed(3)
    h = torch.randn(13, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(40, 8, generator=gen, dtype=torch.float64)  # frozen
    y = torch.randint(0, 40, (13,), generator=gen)
    y[[2, 7]] = IGNORE_INDEX
    weights = torch.rand(13, generator=gen, dtype=torch.float64)
    z = torch.tanh(h @ w.t() * 1.3 / 5.0) * 5.0
    expected = torch.nn.functional.cross_entropy(z, y, ignore_index=IGNORE_INDEX, reduction="none")
    (g_expected,) = torch.autograd.grad((expected * weights).sum(), h)
    calls = []
    real = chunked_ce._chunk_logits
    monkeypatch.setattr(chunked_ce, "_chunk_logits", lambda *a: (calls.append(1), real(*a))[1])
    got = chunked_linear_cross_entropy(h, w, None, y, chunk_size=4, scale=1.3, softcap=5.0)
    assert len(calls) == 4  # ceil(13 / 4) chunks, in forward only
    (g_got,) = torch.autograd.grad((got * weights).sum(), h)
    assert len(calls) == 4
    assert_rel(got, expected, 1e-6)
    assert_rel(g_got, g_expected, 1e-5, "hidden")
    assert (g_got[[2, 7]] == 0).all()


def test_unknown_logit_transform_falls_back_under_auto_and_raises_under_chunked():
    """A model whose forward changes the logits after the head (here: a hidden temperature) fails the probe:
    auto falls back to the plain path (same numbers as plain), chunked refuses with the reason."""
    model = build_tiny_model(**SMALL).model
    original = model.forward

    def hotter(*args, logits_to_keep=0, **kwargs):
        out = original(*args, logits_to_keep=logits_to_keep, **kwargs)
        out.logits = out.logits * 2.0
        return out

    model.forward = hotter
    batch = masked_batch(model.config.vocab_size)
    with pytest.raises(RuntimeError, match="do not reproduce"):
        model_losses(model, batch, "cpu", LossSettings("chunked"))
    auto = model_losses(model, batch, "cpu", LossSettings("auto"))
    assert head_path(model, LossSettings("auto"), batch).kind == "plain"
    plain = model_losses(model, batch, "cpu", LossSettings("plain"))
    torch.testing.assert_close(auto.token_sum, plain.token_sum)


def test_a_fused_kernel_that_drops_per_token_weights_is_refused():
    """The guard for liger (CUDA-only here): a per-token loss whose weight gradient ignores per-token upstream
    gradients (scaled after the sum, as old fused kernels do) is detected; an exact one passes."""

    class ScaledAfterSum(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h, w, y):
            h_, w_ = h.detach().requires_grad_(), w.detach().requires_grad_()
            with torch.enable_grad():
                loss = torch.nn.functional.cross_entropy(
                    h_ @ w_.t(), y, ignore_index=IGNORE_INDEX, reduction="none"
                )
                gh, gw = torch.autograd.grad(loss.sum(), (h_, w_))
            ctx.save_for_backward(gh, gw)
            return loss.detach()

        @staticmethod
        def backward(ctx, g):
            gh, gw = ctx.saved_tensors
            return gh * g[:, None], gw * g.mean(), None

    assert "does not back-propagate per-token weights" in liger_weighting_error(
        lambda h, w, b, y, cap: ScaledAfterSum.apply(h, w, y), "cpu"
    )
    exact = lambda h, w, b, y, cap: torch.nn.functional.cross_entropy(h @ w.t(), y, reduction="none")  # noqa: E731
    assert liger_weighting_error(exact, "cpu") == ""


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="trainer.loss_impl"):
        LossSettings(impl="fast")
    with pytest.raises(ValueError, match="trainer.loss_chunk_size"):
        LossSettings(chunk_size=0)
    model = copy.deepcopy(build_tiny_model(**SMALL).model)
    with pytest.raises(RuntimeError, match="liger"):
        model_losses(model, masked_batch(model.config.vocab_size), "cpu", LossSettings("liger"))


def other_architecture(name: str):
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    if name == "gemma2":  # final logit soft-capping
        return Gemma2ForCausalLM(
            Gemma2Config(
                vocab_size=300,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                final_logit_softcapping=3.0,
            )
        )
    if name == "gpt2":
        return GPT2LMHeadModel(
            GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2, bos_token_id=1, eos_token_id=2)
        )
    return Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=300,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=False,
        )
    )


@pytest.mark.parametrize("name", ["gemma2", "gpt2", "qwen2"])
def test_other_architectures_take_the_chunked_path_with_equal_losses_and_gradients(name):
    model = other_architecture(name).double().eval()  # eval: no dropout, so both forwards see the same net
    batch = masked_batch(300, seed=3)
    plain_losses, plain = weighted_grads(model, batch, "plain")
    chunk_losses, chunked = weighted_grads(model, batch, "chunked")
    path = head_path(model, LossSettings("chunked"), batch)
    assert path.kind == "linear" and path.softcap == (3.0 if name == "gemma2" else None)
    assert_rel(chunk_losses, plain_losses, 1e-5)
    for key in plain:
        assert_rel(chunked[key], plain[key], 1e-5, key)


def test_trainer_keys_are_validated_before_anything_loads(compose):
    from omegaconf import OmegaConf

    from dataflex.config.trainer import TrainingArguments

    for bad, key in (
        (dict(loss_impl="fast"), "trainer.loss_impl"),
        (dict(loss_chunk_size=0), "trainer.loss_chunk_size"),
        (dict(scoring_max_tokens=-1), "trainer.scoring_max_tokens"),
    ):
        with pytest.raises(ValueError, match=key):
            TrainingArguments(**bad)
    cfg = compose(
        "trainer.loss_impl=chunked", "trainer.gradient_checkpointing=true", "trainer.loss_chunk_size=128"
    )
    args = OmegaConf.to_object(cfg.trainer)
    assert (args.loss_impl, args.gradient_checkpointing, args.loss_chunk_size) == ("chunked", True, 128)


def test_padded_vocabulary_for_realistic_head_shapes():
    bundle = build_tiny_model(**SMALL, vocab_size=1000)
    assert bundle.model.get_output_embeddings().weight.shape[0] == 1000 > len(bundle.tokenizer)
    with pytest.raises(ValueError, match="model.vocab_size"):
        build_tiny_model(**SMALL, vocab_size=10)
