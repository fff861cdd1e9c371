"""The training loop: global-batch loss normalisation, per-domain eval, precision errors, fine-tuning."""

from __future__ import annotations

import math

import pytest
import torch

from dataflex.data.processor import collate
from dataflex.train.evaluation import evaluate
from dataflex.train.signals.losses import per_sample_losses
from dataflex.train.trainer.static import StaticTrainer

from helpers import small_trainer


def _params(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


@pytest.mark.parametrize("reduction", ["token", "sample"])
def test_gradient_accumulation_does_not_change_the_update(tmp_path, reduction):
    one = small_trainer(
        StaticTrainer,
        tmp_path / "a",
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        loss_reduction=reduction,
        lr_scheduler_type="constant",
    )
    two = small_trainer(
        StaticTrainer,
        tmp_path / "b",
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        loss_reduction=reduction,
        lr_scheduler_type="constant",
    )
    start = _params(one)
    assert torch.equal(start, _params(two))
    one.train()
    two.train()
    assert not torch.allclose(start, _params(one))
    # Adam turns float noise in near-zero gradients into tiny differences: compare at 1% of one update
    # (lr 3e-3).
    torch.testing.assert_close(_params(one), _params(two), rtol=1e-4, atol=3e-5)


def test_token_loss_equals_hf_loss(tmp_path):
    trainer = small_trainer(StaticTrainer, tmp_path)
    batch = collate([trainer.train_data[i] for i in range(6)], trainer.tokenizer.pad_token_id)
    out = trainer.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    )
    ours = per_sample_losses(out.logits, batch["labels"])
    assert float(ours.token_sum.sum() / ours.token_count.sum()) == pytest.approx(out.loss.item(), rel=1e-5)


def test_eval_is_token_weighted_per_domain(tmp_path):
    trainer = small_trainer(StaticTrainer, tmp_path, eval_data=True)
    data = trainer.eval_data
    metrics = evaluate(
        trainer.model, data, batch_size=7, pad_token_id=trainer.tokenizer.pad_token_id, device="cpu"
    )
    for d, name in enumerate(data.domain_names):
        rows = data.domain_rows(d)
        batch = collate([data[i] for i in rows], trainer.tokenizer.pad_token_id)
        with torch.no_grad():
            logits = trainer.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        losses = per_sample_losses(logits, batch["labels"])
        expected = float(losses.token_sum.sum() / losses.token_count.sum())
        assert metrics[f"eval/loss/{name}"] == pytest.approx(expected, rel=1e-4)
        assert metrics[f"eval/ppl/{name}"] == pytest.approx(math.exp(expected), rel=1e-4)


def test_max_eval_samples_per_domain(tmp_path):
    trainer = small_trainer(StaticTrainer, tmp_path, eval_data=True)
    full = evaluate(trainer.model, trainer.eval_data, batch_size=8, pad_token_id=0, device="cpu")
    capped = evaluate(
        trainer.model, trainer.eval_data, batch_size=8, pad_token_id=0, device="cpu", max_per_domain=1
    )
    assert set(full) == set(capped) and full["eval/loss"] != capped["eval/loss"]


def test_fp16_without_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    trainer = small_trainer(StaticTrainer, tmp_path, fp16=True)
    with pytest.raises(ValueError, match="trainer.fp16"):
        trainer.train()


def test_bf16_and_fp16_together_rejected(tmp_path):
    with pytest.raises(ValueError, match="at most one"):
        small_trainer(StaticTrainer, tmp_path, fp16=True, bf16=True)


def test_freeze_trains_only_the_last_layer(tmp_path):
    trainer = small_trainer(StaticTrainer, tmp_path, model_kwargs={"finetuning_type": "freeze"})
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all(".layers.1." in n for n in changed)


def test_epochs_define_the_step_count(tmp_path):
    trainer = small_trainer(StaticTrainer, tmp_path, max_steps=0, num_train_epochs=0.5)
    assert trainer.total_steps(global_batch_size=8) == math.ceil(0.5 * len(trainer.train_data) / 8)


def test_unwrap_skips_accelerate_only_for_unwrapped_models():
    """`maybe_wrapped` sends DDP/DataParallel/compile containers through accelerate's unwrapper and lets a
    bare or peft model through untouched (that unwrapper's first call imports torch.distributed.fsdp,
    ~0.5 s inside the first step); `unwrap` finds the same HF model either way."""
    import torch

    from dataflex.models.tiny import build_tiny_model
    from dataflex.train.distributed import maybe_wrapped
    from dataflex.train.signals.losses import unwrap

    from helpers import SMALL_MODEL

    model = build_tiny_model(**SMALL_MODEL).model
    assert not maybe_wrapped(model)
    assert unwrap(model) is model
    wrapped = torch.nn.DataParallel(model)  # on a CPU: a plain container with `.module`
    assert maybe_wrapped(wrapped)
    assert unwrap(wrapped) is model

    compiled = torch.compile(model)  # an OptimizedModule holding `_orig_mod` (compiles only when called)
    assert maybe_wrapped(compiled)
    assert unwrap(compiled) is model
