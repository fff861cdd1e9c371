"""`data.packing=true`: the row plan, the packed layout, block-diagonal attention (a token's logits packed
equal its logits alone), and a training run whose per-sample signals equal the unpacked run's."""

from __future__ import annotations

import pytest
import torch

from dataflex.data.packing import best_plan, collate_packed, plan_rows, unpack_token_values
from dataflex.data.processor import IGNORE_INDEX, Features, collate
from dataflex.train.signals.losses import per_sample_losses
from dataflex.train.signals.packed import check_packing_support, packed_logits, packed_sample_losses

from helpers import small_trainer


def _features(lengths, vocab=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k, n in enumerate(lengths):
        ids = torch.randint(3, vocab, (n,), generator=gen).tolist()
        # a masked prompt as in SFT, or every token supervised (train_on_prompt)
        labels = list(ids) if k % 2 else [IGNORE_INDEX] * (n // 3) + ids[n // 3 :]
        out.append(Features(ids, labels, domain=k % 2, sample_id=100 + k))
    return out


def test_plan_rows_is_first_fit_decreasing_within_capacity():
    lengths = [5, 9, 3, 7, 2, 6]
    rows = plan_rows(lengths, capacity=10)
    assert sorted(i for row in rows for i in row) == list(range(6))  # every sample exactly once
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    # longest first: 9 | 7 | 6 | then 5 -> new row (no room), 3 -> row of 7, 2 -> row of 6
    assert rows == [[1], [2, 3], [4, 5], [0]]
    with pytest.raises(ValueError, match="does not fit"):
        plan_rows([11], capacity=10)


def test_best_plan_never_holds_more_slots_than_padding():
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        lengths = torch.randint(
            1, 60, (int(torch.randint(1, 20, (1,), generator=gen)),), generator=gen
        ).tolist()
        rows = best_plan(lengths, max_capacity=64)
        width = max(sum(lengths[i] for i in row) for row in rows)
        assert width <= 64 and len(rows) * width <= len(lengths) * max(lengths)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    # short samples share rows as wide as the longest one: 4 x 10 slots instead of 6 x 10 padded
    assert best_plan([10, 5, 5, 10, 5, 5], max_capacity=30) == [[0], [3], [1, 2], [4, 5]]
    # equal lengths: packing cannot save a slot, so the narrowest rows (one sample each) are kept
    assert best_plan([10] * 4, max_capacity=40) == [[0], [1], [2], [3]]


def test_collate_packed_layout_restarts_positions_and_maps_back():
    feats = _features([6, 4, 9, 3])
    batch = collate_packed(feats, pad_token_id=0, max_capacity=12)
    packed = batch["packed"]
    plain = collate(feats, pad_token_id=0)
    for key in ("input_ids", "attention_mask", "labels", "domain_ids", "sample_ids"):
        assert torch.equal(batch[key], plain[key]), key  # the per-sample view is the ordinary batch
    assert packed["input_ids"].shape == (3, 9)  # rows 9 | 6 | 4+3: 27 slots instead of 4 x 9 padded
    # every sample's tokens appear once, positions restart at 0, its first token is never a target
    for f in feats:
        n = len(f.input_ids)
        found = [
            (r, c)
            for r in range(packed["input_ids"].shape[0])
            for c in range(packed["input_ids"].shape[1] - n + 1)
            if packed["input_ids"][r, c : c + n].tolist() == f.input_ids
        ]
        r, c = found[0]
        assert packed["position_ids"][r, c : c + n].tolist() == list(range(n))
        assert packed["labels"][r, c] == IGNORE_INDEX
        assert packed["labels"][r, c + 1 : c + n].tolist() == f.labels[1:]
    # the packed rows hold exactly the unpacked targets (none predicted across a sample boundary)
    assert int((packed["labels"][:, 1:] != IGNORE_INDEX).sum()) == int(
        (plain["labels"][:, 1:] != IGNORE_INDEX).sum()
    )
    # gather turns the packed shifted labels into the per-sample shifted labels
    back = unpack_token_values(packed["labels"][:, 1:].float(), packed["gather"])
    mask = plain["labels"][:, 1:] != IGNORE_INDEX
    assert torch.equal(back[mask], plain["labels"][:, 1:][mask].float())
    assert (back[~mask & (plain["attention_mask"][:, 1:] == 0)] == 0).all()


def _model(arch: str, attn: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cls, cfg = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config)}[arch]
    torch.manual_seed(0)
    model = cls(
        cfg(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            attn_implementation=attn,
        )
    )
    return model.eval()


@pytest.mark.parametrize("arch,attn", [("llama", "sdpa"), ("llama", "eager"), ("qwen2", "sdpa")])
def test_packed_logits_equal_each_sample_alone(arch, attn):
    model = _model(arch, attn)
    feats = _features([7, 4, 11, 5, 3])
    batch = collate_packed(feats, pad_token_id=0, max_capacity=16)
    packed = batch["packed"]
    assert packed["input_ids"].shape[0] < len(feats)  # really several samples per row
    with torch.no_grad():
        logits = packed_logits(model, packed["input_ids"], packed["position_ids"])
        for f in feats:
            alone = model(input_ids=torch.tensor([f.input_ids])).logits[0]
            n = len(f.input_ids)
            r, c = next(
                (r, c)
                for r in range(logits.shape[0])
                for c in range(logits.shape[1] - n + 1)
                if packed["input_ids"][r, c : c + n].tolist() == f.input_ids
            )
            torch.testing.assert_close(logits[r, c : c + n], alone, atol=1e-5, rtol=0)
        check_packing_support(model, "cpu", vocab_size=50)  # and the startup probe agrees


def test_per_sample_losses_and_gradients_equal_unpacked():
    model = _model("llama")
    feats = _features([7, 4, 11, 5, 3, 9])
    plain = collate(feats, pad_token_id=0)
    ref = per_sample_losses(
        model(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"]).logits, plain["labels"]
    )
    got = packed_sample_losses(model, collate_packed(feats, 0, max_capacity=16), "cpu")
    torch.testing.assert_close(got.token_sum, ref.token_sum, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.token_count, ref.token_count)
    torch.testing.assert_close(got.token_loss, ref.token_loss, atol=1e-5, rtol=1e-5)
    weights = torch.linspace(0.5, 2.0, len(feats))  # a per-sample weighting, as weighters back-propagate
    grads = []
    for losses in (ref, got):
        model.zero_grad()
        (losses.mean * weights).sum().backward(retain_graph=True)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)


def test_a_model_that_attends_across_samples_is_refused():
    class DropsUseCache(torch.nn.Module):
        """Forwards without use_cache=False: transformers then builds a KV cache and ignores the packing."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, use_cache=None, **kwargs):
            return self.inner(**kwargs)

    with pytest.raises(ValueError, match="does not keep packed samples apart"):
        check_packing_support(DropsUseCache(_model("llama")), "cpu", vocab_size=50)


class _Recording:
    """Mixin: keeps each step's gathered per-sample signals and the parameters after training."""

    def on_step_end(self, done, ctx):
        self.seen = getattr(self, "seen", []) + [ctx.gathered()]
        return super().on_step_end(done, ctx)


def _train(trainer_base, tmp_path, capacity, **args):
    cls = type("Recorded", (_Recording, trainer_base), {"pack_capacity": capacity})
    trainer = small_trainer(cls, tmp_path / str(capacity), **args)
    trainer.summary = trainer.train()
    return trainer


def test_training_with_packing_sees_the_unpacked_per_sample_signals(tmp_path, monkeypatch):
    import dataflex.train.loop as loop_module
    from dataflex.train.trainer.static import StaticTrainer

    shapes = []

    def recording_collate(features, pad_token_id, max_capacity):
        batch = collate_packed(features, pad_token_id, max_capacity)
        shapes.append((len(features), batch["packed"]["input_ids"].shape[0]))
        return batch

    monkeypatch.setattr(loop_module, "collate_packed", recording_collate)
    args = dict(max_steps=3, per_device_train_batch_size=4, gradient_accumulation_steps=2, learning_rate=1e-2)
    plain, packed = (_train(StaticTrainer, tmp_path, cap, **args) for cap in (None, 64))
    assert len(shapes) == 6 and any(
        rows < samples for samples, rows in shapes
    )  # the packed run really packed
    for a, b in zip(plain.seen, packed.seen, strict=True):
        for key in ("sample_ids", "domain_ids", "token_count"):
            assert torch.equal(a[key], b[key]), key
        torch.testing.assert_close(b["sample_loss"], a["sample_loss"], atol=1e-5, rtol=1e-5)
    for p, q in zip(plain.model.parameters(), packed.model.parameters()):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-4)
    assert packed.summary["train_tokens_per_s"] > 0


def test_dynamic_weight_loss_weighter_sees_the_same_losses_packed(tmp_path):
    """The loss weighter (deferred backward over 2 micro-batches) gets the same per-sample losses, hence the
    same weights and the same update, packed or not."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "weight"))
    from weight_helpers import component, recording_trainer_class, schema, train_tiny

    runs = []
    for capacity in (None, 48):
        cls = type("Packed", (recording_trainer_class(),), {"pack_capacity": capacity})
        runs.append(
            train_tiny(
                component(schema("loss"), strategy="linupper", temperature=0.3),
                steps=3,
                warmup_step=1,
                per_device=4,
                accumulation=2,
                trainer_cls=cls,
            )
        )
    plain, packed = runs
    assert [w is None for w in packed.weights] == [True, False, False]
    for a, b in zip(plain.weights, packed.weights):
        if a is not None:
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    for a, b in zip(plain.token_counts, packed.token_counts):
        assert torch.equal(a, b)
    for (s, v, p), (s2, v2, p2) in zip(plain.loss_pairs, packed.loss_pairs, strict=True):
        assert s == s2 and v2 == pytest.approx(v, abs=1e-5) and p2 == pytest.approx(p, abs=1e-5)
    for a, b in zip(plain.grads, packed.grads):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_bad_packing_configs_fail_before_loading(compose):
    from dataflex.data.arguments import DataArguments
    from dataflex.run import validate

    with pytest.raises(ValueError, match="pretrain already packs"):
        DataArguments(mode="pretrain", packing=True)
    validate(compose("data.packing=true"))  # the SFT default composes and validates
    with pytest.raises(ValueError, match="reuse_forward"):
        validate(compose("trainer=dynamic_weight", "component=adapt", "data.packing=true"))
    validate(
        compose(
            "trainer=dynamic_weight", "component=adapt", "data.packing=true", "component.reuse_forward=false"
        )
    )
