"""Every mixer's state_dict/load_state_dict: a mixer restored mid-run (through the checkpoint's
weights_only serialisation) gives the same next proportions as the one that kept running."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from mix_helpers import in_force, manager, stats, write_user_package

from dataflex.config.component.mix import (
    DoReMiMixerConfig,
    DynamicMoeMixerConfig,
    OdmMixerConfig,
    StaticMixerConfig,
)
from dataflex.models.tiny import build_tiny_model
from dataflex.models.tiny_moe import build_tiny_moe_model
from dataflex.train.checkpoint import from_safe, to_safe
from dataflex.train.mixer.doremi import DoReMiMixer
from dataflex.train.mixer.dynamic_moe import DynamicMoeMixer
from dataflex.train.mixer.odm import OdmMixer
from dataflex.train.mixer.random_mixer import RandomMixer
from dataflex.train.mixer.static_mixer import KeepMixer, StaticMixer
from dataflex.train.signals.losses import SampleLosses

from helpers import small_data

LOSSES = [
    [2.0, 1.0, 3.0, 4.0, 0.5],
    [1.8, 0.9, 2.5, 4.1, 0.4],
    [1.7, 0.7, 2.4, 4.0, 0.3],
    [1.5, 0.6, 2.0, 4.2, 0.2],
]


def through_checkpoint(state):
    buf = io.BytesIO()
    torch.save(to_safe(state), buf)
    buf.seek(0)
    return from_safe(torch.load(buf, weights_only=True))


def run_updates(mixer, first: int, last: int, model=None) -> list[np.ndarray]:
    """observe + mix + apply for steps first..last-1, as the trainer does; returns the proportions."""
    out = []
    for step in range(first, last):
        mixer.observe(stats(step, LOSSES[step % len(LOSSES)]))
        p = np.asarray(mixer.mix(model, step), dtype=float)
        in_force(mixer.mixture_manager, p)
        out.append(p)
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda: OdmMixer(manager(), OdmMixerConfig(alpha=0.7, reward_scale=0.5, min_exploration_rate=0.01)),
        lambda: OdmMixer(
            manager(), OdmMixerConfig(reward="learning_progress", progress_fast=0.5, progress_slow=0.8)
        ),
        lambda: RandomMixer(manager(), seed=5),
        lambda: StaticMixer(manager(), StaticMixerConfig(proportions=[0.4, 0.3, 0.1, 0.1, 0.1])),
        lambda: KeepMixer(manager([0.4, 0.3, 0.1, 0.1, 0.1])),
    ],
    ids=["odm", "odm_progress", "random", "static", "none"],
)
def test_restored_mixer_continues_identically(make):
    running = make()
    run_updates(running, 1, 12)
    saved = through_checkpoint(running.state_dict())
    proportions = running.mixture_manager.proportions
    expected = run_updates(running, 12, 20)

    restored = make()
    restored.load_state_dict(saved)
    in_force(restored.mixture_manager, proportions)  # the trainer restores these with its sampler
    for a, b in zip(run_updates(restored, 12, 20), expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=0)


def test_odm_state_really_carries_the_rewards():
    running = OdmMixer(manager())
    run_updates(running, 1, 40)
    fresh = OdmMixer(manager(running.mixture_manager.proportions))
    assert not np.allclose(fresh.mix(None, 40), running.mix(None, 40))  # without the state: different
    fresh.load_state_dict(through_checkpoint(running.state_dict()))
    np.testing.assert_array_equal(fresh.mix(None, 40), running.mix(None, 40))


def test_spec_random_mixer_state(tmp_path, monkeypatch):
    write_user_package(tmp_path, "spec_state_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    from dataflex.core.registry import REGISTRY

    monkeypatch.setitem(REGISTRY, "mixer", dict(REGISTRY["mixer"]))  # keep the built-in `random` registered
    from spec_state_pkg.random_mixer import RandomMixer as SpecRandomMixer

    mixer = SpecRandomMixer(manager(), seed=11)
    other = SpecRandomMixer(manager(), seed=0)
    other.load_state_dict(through_checkpoint(mixer.state_dict()))
    assert other.seed == 11
    np.testing.assert_array_equal(other.mix(None, 3), mixer.mix(None, 3))
    sys.modules.pop("spec_state_pkg.random_mixer", None)


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    bundle = build_tiny_model(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        seed=1,
    )
    path = tmp_path_factory.mktemp("ref") / "final_model"
    bundle.model.save_pretrained(path)
    return path


def _doremi_step(mixer, batch, model):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    from dataflex.train.signals.losses import per_sample_losses

    losses: SampleLosses = per_sample_losses(logits, batch["labels"])
    mixer.before_backward([losses], [batch], ctx=None, update=True)
    return mixer.alpha.copy()


def test_doremi_restored_mid_run(reference_dir, tmp_path):
    from dataflex.data.processor import collate

    bundle = build_tiny_model(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        seed=2,
    )
    data = small_data(bundle.tokenizer, max_samples=4)
    batches = [
        collate([data[i] for i in range(s, len(data), 5)][:6], bundle.tokenizer.pad_token_id)
        for s in range(5)
    ]

    def make(run_dir):
        return DoReMiMixer(
            manager(),
            DoReMiMixerConfig(reference_model_path=str(reference_dir), eta=2.0, smoothing=0.01),
            model=bundle.model,
            run_dir=str(run_dir),
        )

    running = make(tmp_path / "a")
    for b in batches[:3]:
        _doremi_step(running, b, bundle.model)
    saved = through_checkpoint(running.state_dict())
    expected = [_doremi_step(running, b, bundle.model) for b in batches[3:]]
    restored = make(tmp_path / "b")
    restored.load_state_dict(saved)
    for b, alpha in zip(batches[3:], expected):
        np.testing.assert_allclose(_doremi_step(restored, b, bundle.model), alpha, rtol=0, atol=1e-12)
    np.testing.assert_allclose(restored.average_alpha, running.average_alpha, atol=1e-12)
    assert (tmp_path / "a" / "doremi_weights.json").is_file()


def test_dynamic_moe_restored_mid_run():
    bundle = build_tiny_moe_model(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=16,
    )
    data = small_data(bundle.tokenizer, max_samples=6, split="eval")

    def make():
        return DynamicMoeMixer(
            manager(),
            model=bundle.model,
            eval_data=data,
            pad_token_id=bundle.tokenizer.pad_token_id,
            config=DynamicMoeMixerConfig(samples_per_domain=4, batch_size=3, eta=50.0, smoothing=0.01),
        )

    running = make()
    run_updates(running, 1, 3, bundle.model)
    saved, proportions = through_checkpoint(running.state_dict()), running.mixture_manager.proportions
    expected = run_updates(running, 3, 5, bundle.model)
    restored = make()
    restored.load_state_dict(saved)
    in_force(restored.mixture_manager, proportions)
    for a, b in zip(run_updates(restored, 3, 5, bundle.model), expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert not np.allclose(expected[-1], 0.2)  # the routing moved the weights


def test_dynamic_moe_loads_come_from_the_last_layer_and_routers_freeze_by_default():
    """Issue 13 item 4: the authors count the last MoE layer's routing and freeze the gates in dynamic
    runs."""
    assert DynamicMoeMixerConfig().freeze_gate and DynamicMoeMixerConfig().router_layers == "last"
    bundle = build_tiny_moe_model(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=16,
    )
    data = small_data(bundle.tokenizer, max_samples=6, split="eval")
    pad = bundle.tokenizer.pad_token_id
    last = DynamicMoeMixer(
        manager(),
        model=bundle.model,
        eval_data=data,
        pad_token_id=pad,
        config=DynamicMoeMixerConfig(samples_per_domain=4, batch_size=4),
    )
    assert all(
        not p.requires_grad for n, p in bundle.model.named_parameters() if n.endswith("mlp.gate.weight")
    )
    every = DynamicMoeMixer(
        manager(),
        model=bundle.model,
        eval_data=data,
        pad_token_id=pad,
        config=DynamicMoeMixerConfig(samples_per_domain=4, batch_size=4, router_layers="all"),
    )
    from dataflex.data.processor import collate

    def manual(layers):
        loads = []
        for d in range(5):
            rows = np.asarray(data.domain_rows(d))[:4]
            batch = collate([data[int(i)] for i in rows], pad)
            with torch.no_grad():
                out = bundle.model.eval()(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    output_router_logits=True,
                )
            real = batch["attention_mask"].reshape(-1).bool()
            load = torch.zeros(4, dtype=torch.float64)
            for logits in [out.router_logits[i] for i in layers]:
                load += torch.bincount(logits[real].topk(2, dim=-1).indices.reshape(-1), minlength=4).double()
            loads.append((load / load.sum()).numpy())
        return np.stack(loads)

    np.testing.assert_allclose(last.router_loads(bundle.model), manual([1]), atol=1e-12)
    np.testing.assert_allclose(every.router_loads(bundle.model), manual([0, 1]), atol=1e-12)
