"""The Mix trainer on real (tiny) training runs: exact schedules, per-domain visibility, DoReMi's loss,
static mixtures and the custom-mixer API."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from mix_helpers import NAMES, history, mix_trainer, save_reference, write_user_package

from dataflex.data.sampling import ProportionScheduler
from dataflex.tracking import JsonlTracker, TrackerGroup, read_metrics
from dataflex.train.mixer.doremi import DoReMiMixer

CYCLING = {"_target_": "mix_helpers.CyclingMixer"}
ODM = {"_target_": "dataflex.train.mixer.odm.OdmMixer"}


def with_metrics(trainer, run_dir):
    trainer.trackers = TrackerGroup([JsonlTracker(run_dir / "metrics.jsonl")])
    return trainer


def expected_counts(proportions, batch: int, steps: int) -> list[list[int]]:
    """What the deficit rule puts in each of `steps` batches right after a plan starts."""
    scheduler = ProportionScheduler(proportions)
    out = []
    for _ in range(steps):
        counts = [0] * len(proportions)
        for _ in range(batch):
            counts[scheduler.next_domain()] += 1
        out.append(counts)
    return out


@pytest.mark.parametrize("warmup", [2, 0])
def test_each_decision_governs_exactly_the_next_steps(tmp_path, warmup):
    """The k-th mixer call puts every sample on domain k: each step's trained batch (counted from what the
    loop forwarded) must be all that domain from the step right after the call, until the next call."""
    trainer = mix_trainer(tmp_path, component=CYCLING, warmup_step=warmup, update_step=3, update_times=3)
    trainer.train()
    assert trainer.total_steps(8) == warmup + 9
    assert trainer.mixer.calls == [warmup, warmup + 3, warmup + 6]
    counts = history(tmp_path)["trained_counts"]
    assert len(counts) == warmup + 9
    assert counts[:warmup] == expected_counts([0.2] * 5, 8, warmup)  # warmup: the uniform rule
    for k in range(3):
        for step in range(warmup + 3 * k + 1, warmup + 3 * k + 4):  # 1-based steps governed by call k
            assert counts[step - 1] == [8 if d == k else 0 for d in range(5)], (k, step)
    assert [u["step"] for u in history(tmp_path)["updates"]] == [0, warmup, warmup + 3, warmup + 6]


def test_proportions_are_exact_per_batch(tmp_path):
    """A static mixer's proportions, from the first step after the update, within one sample per prefix."""
    p = [0.5, 0.25, 0.125, 0.0625, 0.0625]
    trainer = mix_trainer(
        tmp_path,
        component={"_target_": "dataflex.train.mixer.static_mixer.StaticMixer", "proportions": p},
        warmup_step=1,
        update_step=4,
        update_times=1,
    )
    trainer.train()
    counts = history(tmp_path)["trained_counts"]
    assert counts[1:] == expected_counts(p, 8, 4)
    assert np.asarray(counts[1:]).sum(0).tolist() == [16, 8, 4, 2, 2]  # 32 samples: exactly p * 32


def test_odm_run_logs_mixture_and_per_domain_losses(tmp_path):
    trainer = with_metrics(
        mix_trainer(
            tmp_path,
            component=ODM,
            eval_data=True,
            warmup_step=2,
            update_step=2,
            update_times=3,
            eval_steps=4,
        ),
        tmp_path,
    )
    trainer.train()
    trainer.trackers.finish()
    records = read_metrics(tmp_path / "metrics.jsonl")
    mixture_steps = [r["step"] for r in records if "mixture/greet" in r]
    assert mixture_steps == [0, 2, 4, 6]
    for r in records:
        if "mixture/greet" in r:
            assert sum(r[f"mixture/{d}"] for d in NAMES) == pytest.approx(1.0)
            if r["step"] > 0:
                assert all(f"odm/estimated_reward/{d}" in r for d in NAMES)
    loss_steps = sorted({r["step"] for r in records if any(k.startswith("train/loss/") for k in r)})
    assert loss_steps == list(range(1, 9))
    assert any("eval/loss/noise" in r for r in records)
    hist = history(tmp_path)
    assert hist["domains"] == NAMES and [u["step"] for u in hist["updates"]] == [0, 2, 4, 6]
    assert not (tmp_path / "mixture_history.png").exists()  # drawn once, in plots/mixture_proportions.png


def test_doremi_updates_alpha_before_backward_and_applies_it(tmp_path, monkeypatch):
    reference = save_reference(tmp_path / "reference")
    seen = {"used": [], "after_update": []}
    weighted, update = DoReMiMixer.weighted_loss, DoReMiMixer.update

    def spy_weighted(self, losses, batch, ctx):
        seen["used"].append((ctx.step, self.alpha.copy()))
        return weighted(self, losses, batch, ctx)

    def spy_update(self, excess_sum, token_count):
        out = update(self, excess_sum, token_count)
        seen["after_update"].append(out.copy())
        return out

    monkeypatch.setattr(DoReMiMixer, "weighted_loss", spy_weighted)
    monkeypatch.setattr(DoReMiMixer, "update", spy_update)
    trainer = with_metrics(
        mix_trainer(
            tmp_path / "run",
            component={
                "_target_": "dataflex.train.mixer.doremi.DoReMiMixer",
                "reference_model_path": str(reference),
                "eta": 5.0,
            },
            warmup_step=0,
            update_step=1,
            update_times=4,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
        ),
        tmp_path,
    )
    trainer.train()
    trainer.trackers.finish()
    assert trainer.defer_backward
    assert len(seen["after_update"]) == 4
    # two micro-batches per step, each back-propagating with the alpha computed before it in that same step
    assert [s for s, _ in seen["used"]] == [0, 0, 1, 1, 2, 2, 3, 3]
    for (_, used), expected in zip(seen["used"], np.repeat(np.arange(4), 2)):
        np.testing.assert_array_equal(used, seen["after_update"][expected])
    weights = json.loads((tmp_path / "run" / "doremi_weights.json").read_text())
    assert weights["domains"] == NAMES and weights["num_updates"] == 4
    np.testing.assert_allclose(weights["proportions"], np.mean(seen["after_update"], axis=0), atol=1e-12)
    assert not np.allclose(weights["proportions"], 0.2)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert sum("doremi/alpha/noise" in r for r in records) == 4


def test_doremi_alpha_changes_at_every_step_under_the_default_schedule(tmp_path):
    """Issue 13 item 2: with the trainer's generic schedule (warmup 50, update 25 by default; here warmup 3,
    update 2) alpha still moves at every step, as in the paper and its code; sampling stays uniform."""
    reference = save_reference(tmp_path / "reference")
    trainer = with_metrics(
        mix_trainer(
            tmp_path / "run",
            component={
                "_target_": "dataflex.train.mixer.doremi.DoReMiMixer",
                "reference_model_path": str(reference),
                "eta": 5.0,
            },
            warmup_step=3,
            update_step=2,
            update_times=2,
            per_device_train_batch_size=4,
        ),
        tmp_path,
    )
    trainer.train()
    trainer.trackers.finish()
    records = read_metrics(tmp_path / "metrics.jsonl")
    alphas = {
        r["step"]: [r[f"doremi/alpha/{d}"] for d in NAMES] for r in records if "doremi/alpha/greet" in r
    }
    assert sorted(alphas) == list(range(1, 8))  # every one of the 3 + 2 x 2 steps, warmup included
    previous = [0.2] * 5
    for step in range(1, 8):
        assert not np.allclose(alphas[step], previous, rtol=0, atol=1e-9), step
        previous = alphas[step]
    assert trainer.mixer.num_updates == 7
    assert all(u["proportions"] == pytest.approx([0.2] * 5) for u in history(tmp_path / "run")["updates"])


def test_odm_observe_warmup_false_skips_the_warmup_rewards(tmp_path, monkeypatch):
    """ODM's released code makes no update during warmup: observe_warmup=false keeps the bandit blind
    there."""
    from dataflex.train.mixer.odm import OdmMixer

    seen = []
    original = OdmMixer.observe
    monkeypatch.setattr(OdmMixer, "observe", lambda self, st: (seen.append(st.step), original(self, st))[1])
    trainer = mix_trainer(
        tmp_path, component={**ODM, "observe_warmup": False}, warmup_step=2, update_step=1, update_times=2
    )
    trainer.train()
    assert seen == [3, 4]
    seen.clear()
    mix_trainer(tmp_path / "default", component=ODM, warmup_step=2, update_step=1, update_times=2).train()
    assert seen == [1, 2, 3, 4]


def test_doremi_reference_errors(tmp_path):
    run = mix_trainer(
        tmp_path,
        component={
            "_target_": "dataflex.train.mixer.doremi.DoReMiMixer",
            "reference_model_path": str(tmp_path / "nope"),
        },
        warmup_step=0,
        update_step=1,
        update_times=1,
    )
    with pytest.raises(FileNotFoundError, match="component.reference_model_path=.*nope.*doremi_step1"):
        run.train()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    run = mix_trainer(
        tmp_path,
        component={
            "_target_": "dataflex.train.mixer.doremi.DoReMiMixer",
            "reference_model_path": str(tmp_path / "broken"),
        },
        warmup_step=0,
        update_step=1,
        update_times=1,
    )
    with pytest.raises(RuntimeError, match="could not load a causal LM"):
        run.train()
    from omegaconf import OmegaConf

    from dataflex.config.component.mix import DoReMiMixerConfig

    run = mix_trainer(
        tmp_path,
        component=OmegaConf.structured(DoReMiMixerConfig),
        warmup_step=0,
        update_step=1,
        update_times=1,
    )
    with pytest.raises(ValueError, match="component.reference_model_path must be set"):
        run.train()


def test_static_mix_and_proportions_file(tmp_path):
    weights = {
        "domains": ["noise", "greet", "target", "arith", "reverse"],
        "proportions": [0.0, 0.5, 0.25, 0.25, 0.0],
    }
    path = tmp_path / "w.json"
    path.write_text(json.dumps(weights))
    trainer = mix_trainer(
        tmp_path / "run",
        static_mix=True,
        train_step=3,
        mixture_sample_rule="mixture",
        mixture_proportions_file=str(path),
    )
    assert trainer.mixture.proportions.tolist() == [0.5, 0.25, 0.0, 0.0, 0.25]  # matched by name
    trainer.train()
    hist = history(tmp_path / "run")
    assert len(hist["updates"]) == 1 and trainer.mixer is None
    assert np.asarray(hist["trained_counts"]).sum(0).tolist() == [12, 6, 0, 0, 6]
    path.write_text(json.dumps({"domains": ["greet", "arith"], "proportions": [0.5, 0.5]}))
    with pytest.raises(ValueError, match="has domains .*'greet', 'arith'.* but the training data has"):
        mix_trainer(
            tmp_path / "run2",
            static_mix=True,
            train_step=3,
            mixture_sample_rule="mixture",
            mixture_proportions_file=str(path),
        )


def test_stratified_follows_domain_sizes(tmp_path):
    trainer = mix_trainer(tmp_path, static_mix=True, train_step=1, mixture_sample_rule="stratified")
    sizes = np.asarray([len(trainer.train_data.domain_rows(d)) for d in range(5)], dtype=float)
    np.testing.assert_allclose(trainer.mixture.proportions, sizes / sizes.sum())


def test_long_schedule_reshuffles_and_continues(tmp_path, caplog):
    """32 rows per domain, 25 steps x 8 = 40 samples per domain: each domain is reshuffled and repeated."""
    with caplog.at_level(logging.INFO, logger="dataflex"):
        trainer = mix_trainer(tmp_path, static_mix=True, train_step=25)
        trainer.train()
    assert "reshuffled and repeated" in caplog.text
    assert trainer.sampler.passes == [1] * 5 and trainer.epoch == pytest.approx(1 + 8 / 32)
    assert np.asarray(history(tmp_path)["trained_counts"]).sum(0).tolist() == [40] * 5


def test_custom_mixer_from_the_spec_by_name_and_by_target(tmp_path, monkeypatch):
    from dataflex.core.registry import REGISTRY

    write_user_package(tmp_path / "src", "user_mixers")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setitem(REGISTRY, "mixer", dict(REGISTRY["mixer"]))
    np.random.seed(3)
    raw = np.random.random(5)
    expected = (raw / raw.sum()).tolist()
    by_name = {
        "_target_": "registry",
        "name": "random",
        "module": "user_mixers.random_mixer",
        "params": {"seed": 3},
    }
    by_target = {"_target_": "user_mixers.random_mixer.RandomMixer", "seed": 3}
    for i, component in enumerate((by_name, by_target)):
        trainer = mix_trainer(
            tmp_path / f"run{i}", component=component, warmup_step=1, update_step=1, update_times=1
        )
        trainer.train()
        assert type(trainer.mixer).__module__ == "user_mixers.random_mixer"
        np.testing.assert_allclose(history(tmp_path / f"run{i}")["updates"][1]["proportions"], expected)


def test_unknown_registered_mixer_lists_the_mixers(tmp_path):
    trainer = mix_trainer(
        tmp_path,
        component={"_target_": "registry", "name": "nope", "module": None, "params": {}},
        warmup_step=1,
        update_step=1,
        update_times=1,
    )
    with pytest.raises(
        KeyError, match="No mixer named 'nope'.*doremi, dynamic_moe, none, odm, random, static"
    ):
        trainer.train()


def test_freeze_gate_freezes_exactly_the_routers(tmp_path):
    from dataflex.models.tiny_moe import build_tiny_moe_model
    from dataflex.tracking import TrackerGroup
    from dataflex.train.trainer.dynamic_mix import DynamicMixTrainer

    from helpers import small_data

    def bundle():
        return build_tiny_moe_model(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
        )

    before = {k: v.clone() for k, v in bundle().model.state_dict().items()}
    b = bundle()
    from omegaconf import OmegaConf

    trainer = DynamicMixTrainer(
        bundle=b,
        train_data=small_data(b.tokenizer),
        eval_data=small_data(b.tokenizer, max_samples=8, split="eval"),
        component=OmegaConf.create(
            {
                "_target_": "dataflex.train.mixer.dynamic_moe.DynamicMoeMixer",
                "freeze_gate": True,
                "samples_per_domain": 8,
                "batch_size": 8,
            }
        ),
        trackers=TrackerGroup([]),
        run_dir=str(tmp_path),
        warmup_step=1,
        update_step=2,
        update_times=2,
        per_device_train_batch_size=8,
        disable_tqdm=True,
        eval_on_start=False,
        eval_steps=0,
        save_final_model=False,
        learning_rate=1e-2,
    )
    trainer.train()
    after = b.model.state_dict()
    routers = [k for k in after if k.endswith("mlp.gate.weight")]
    assert routers == ["model.layers.0.mlp.gate.weight"]
    for k in after:
        changed = not torch.equal(before[k], after[k])
        assert changed == (k not in routers), k  # routers frozen; gate_proj, shared_expert_gate, ... train
    hist = history(tmp_path)
    assert len(hist["updates"]) == 3 and not np.allclose(hist["updates"][-1]["proportions"], 0.2)
