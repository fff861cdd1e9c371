"""The schedule / ADO / Aioli mixers under a real `DynamicMixTrainer` (tiny model, CPU), and the export round
trip: a random-mixer run, exported to a schedule and replayed with the schedule mixer, trains the same ids to
bit-identical weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mix_helpers import NAMES, history, manager, mix_trainer, stats

from dataflex.mixing.export import export_schedule, export_trained_ids
from dataflex.mixing.mixers import AdoMixer, AioliMixer, ScheduleMixer
from dataflex.mixing.schedule import ScheduleError, save_schedule

SCHEDULE = "dataflex.mixing.mixers.ScheduleMixer"


def _recorded(trainer) -> list[np.ndarray]:
    """Wraps the trainer's `next_indices` to record every global batch's ids."""
    seen: list[np.ndarray] = []
    original = trainer.next_indices

    def record(step: int, n: int) -> np.ndarray:
        ids = original(step, n)
        seen.append(np.asarray(ids).copy())
        return ids

    trainer.next_indices = record
    return seen


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_schedule_mixer_follows_the_schedule_in_the_data_order(tmp_path):
    inline = {
        "domains": list(reversed(NAMES)),
        "points": [{"step": 0, "proportions": [0.2] * 5}, {"step": 3, "proportions": [0, 0, 0, 0, 1.0]}],
    }
    m = ScheduleMixer(manager(), schedule=inline)
    assert m.mix(None, 2).tolist() == [0.2] * 5
    assert m.mix(None, 3).tolist() == [1.0, 0, 0, 0, 0]  # the last of the reversed names is NAMES[0]
    with pytest.raises(ValueError, match="exactly one of component.path"):
        ScheduleMixer(manager())
    with pytest.raises(ScheduleError, match="do not match the training data"):
        ScheduleMixer(manager(), schedule={**inline, "domains": ["a", "b", "c", "d", "e"]})


def test_export_and_replay_train_the_same_ids_to_identical_weights(tmp_path):
    schedule_args = dict(warmup_step=2, update_step=2, update_times=3, learning_rate=1e-2, seed=3)
    original = mix_trainer(
        tmp_path / "random",
        component={"_target_": "dataflex.train.mixer.random_mixer.RandomMixer", "seed": 11},
        **schedule_args,
    )
    ids_a = _recorded(original)
    original.train()
    weights_a = _weights(original)

    exported = export_schedule(tmp_path / "random")
    assert exported.change_steps() == [0, 2, 4, 6]
    assert exported.source["trainer"]["update_step"] == 2
    path = save_schedule(exported, tmp_path / "recipe.yaml")

    replay = mix_trainer(
        tmp_path / "replay", component={"_target_": SCHEDULE, "path": str(path)}, **schedule_args
    )
    ids_b = _recorded(replay)
    replay.train()
    assert len(ids_a) == 8 and all(np.array_equal(a, b) for a, b in zip(ids_a, ids_b, strict=True))
    assert history(tmp_path / "replay")["trained_counts"] == history(tmp_path / "random")["trained_counts"]
    manifest = export_trained_ids(tmp_path / "random")  # the ledger's account of what was trained
    assert manifest is not None and manifest["steps"] == list(range(1, 9))
    assert manifest["sample_ids"] == [a.tolist() for a in ids_a]
    assert export_trained_ids(tmp_path / "replay") == manifest
    weights_b = _weights(replay)
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        assert torch.equal(weights_a[k], weights_b[k]), k


def test_replay_with_another_update_cadence_changes_the_draws(tmp_path):
    """Why the export keeps the trainer's cadence: the sampler restarts its deficit counters at every
    set_proportions, so calling the schedule mixer at extra steps (same proportions) draws other ids."""
    base = dict(warmup_step=0, update_step=4, update_times=2, seed=3)
    points = [{"step": 0, "proportions": [0.3, 0.1, 0.2, 0.2, 0.2]}]
    inline = {"domains": NAMES, "points": points}
    a = mix_trainer(tmp_path / "a", component={"_target_": SCHEDULE, "schedule": inline}, **base)
    ids_a = _recorded(a)
    a.train()
    b = mix_trainer(
        tmp_path / "b",
        component={"_target_": SCHEDULE, "schedule": inline},
        **{**base, "update_step": 1, "update_times": 8},
    )
    ids_b = _recorded(b)
    b.train()
    assert sum(len(x) for x in ids_a) == sum(len(x) for x in ids_b) == 64
    assert not all(np.array_equal(x, y) for x, y in zip(ids_a, ids_b))


def test_ado_mixer_observes_then_mixes_from_its_fit():
    m = AdoMixer(manager(), prior="uniform", start_step=4, fit_stride=1, smooth_window=3, e_floor=-2.0)
    assert m.mix(None, 0).tolist() == [0.2] * 5  # before start_step: the mixture in force
    for step in range(1, 9):
        m.observe(stats(step, [2.0 + 1.0 / step**0.5 * (d + 1) for d in range(5)]))
    p = m.mix(None, 8)
    assert np.isclose(p.sum(), 1.0) and not np.allclose(p, 0.2)
    assert p.argmax() == 4  # the domain whose loss still falls fastest
    assert "ado/exponent/target" in m.metrics()
    again = AdoMixer(manager(), prior="uniform", start_step=4, fit_stride=1, smooth_window=3, e_floor=-2.0)
    again.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(again.mix(None, 9), m.mix(None, 9))


def test_ado_mixer_refuses_a_bad_prior_and_unknown_keys():
    with pytest.raises(ValueError, match="component.prior"):
        AdoMixer(manager(), prior=[0.5, 0.5])
    with pytest.raises(TypeError, match="start_stepp"):
        AdoMixer(manager(), start_stepp=3)


def test_ado_trains_under_the_trainer(tmp_path):
    t = mix_trainer(
        tmp_path,
        component={
            "_target_": "dataflex.mixing.mixers.AdoMixer",
            "start_step": 4,
            "fit_stride": 1,
            "smooth_window": 3,
            "e_floor": -2.0,
            "fit_steps": 50,
        },
        warmup_step=2,
        update_step=2,
        update_times=3,
    )
    t.train()
    updates = history(tmp_path)["updates"]
    assert [u["step"] for u in updates] == [0, 2, 4, 6]
    assert updates[1]["proportions"] == updates[0]["proportions"]  # step 2 < start_step: kept
    assert updates[2]["proportions"] != updates[0]["proportions"]


def test_aioli_probes_then_exploits_under_the_trainer(tmp_path):
    cfg = {
        "_target_": "dataflex.mixing.mixers.AioliMixer",
        "lp_rounds": 1,
        "lp_steps": 1,
        "round_steps": 7,
        "one_hot_factor": 0.6,
        "eval_max_per_domain": 2,
    }
    t = mix_trainer(tmp_path, component=cfg, eval_data=True, warmup_step=0, update_step=1, update_times=7)
    t.train()
    updates = [u for u in history(tmp_path)["updates"] if u["source"] != "init"]
    assert len(updates) == 7
    probes = np.array([u["proportions"] for u in updates[:5]])
    assert sorted(probes.argmax(1).tolist()) == [0, 1, 2, 3, 4]  # each domain probed once
    np.testing.assert_allclose(probes.max(1), 0.6)
    np.testing.assert_allclose(updates[5]["proportions"], updates[6]["proportions"])  # the exploit segments
    assert not np.allclose(updates[5]["proportions"], 0.2)


def test_aioli_mixer_checks_its_segment_cadence(tmp_path):
    cfg = {
        "_target_": "dataflex.mixing.mixers.AioliMixer",
        "lp_rounds": 1,
        "lp_steps": 2,
        "round_steps": 12,
        "one_hot_factor": 0.6,
    }
    t = mix_trainer(tmp_path, component=cfg, eval_data=True, warmup_step=0, update_step=1, update_times=3)
    with pytest.raises(ValueError, match="set trainer.update_step=2"):
        t.train()


def test_aioli_mixer_needs_eval_data():
    with pytest.raises(ValueError, match="eval losses per domain"):
        AioliMixer(manager(), lp_rounds=1, lp_steps=1, round_steps=7)


RESUMABLE = {
    "ado": (
        {
            "_target_": "dataflex.mixing.mixers.AdoMixer",
            "start_step": 3,
            "fit_stride": 1,
            "smooth_window": 3,
            "e_floor": -2.0,
            "fit_steps": 50,
        },
        False,
    ),
    "aioli": (
        {
            "_target_": "dataflex.mixing.mixers.AioliMixer",
            "lp_rounds": 1,
            "lp_steps": 1,
            "round_steps": 7,
            "one_hot_factor": 0.6,
            "eval_max_per_domain": 2,
        },
        True,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_resumed_run_continues_exactly(tmp_path, name):
    """A run resumed from checkpoint-4 (mid-fit history for ADO, mid-probe-round for Aioli) makes the same
    decisions and ends at the same weights as the uninterrupted run."""
    component, eval_data = RESUMABLE[name]
    schedule = dict(warmup_step=1, update_step=1, update_times=9, save_steps=4, learning_rate=1e-2)
    full = mix_trainer(tmp_path / "full", component=component, eval_data=eval_data, **schedule)
    full.train()
    cut = mix_trainer(tmp_path / "cut", component=component, eval_data=eval_data, **schedule)
    cut.train()
    resumed = mix_trainer(
        tmp_path / "cut",
        component=component,
        eval_data=eval_data,
        resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-4"),
        **schedule,
    )
    resumed.train()
    a, b = full.history.as_dict(), resumed.history.as_dict()
    assert a["trained_counts"] == b["trained_counts"]
    assert [u["proportions"] for u in a["updates"]] == [u["proportions"] for u in b["updates"]]
    assert len({tuple(u["proportions"]) for u in a["updates"]}) > 2  # the mixer did change the mixture
    for (key, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), key


@pytest.mark.slow
def test_cli_export_and_replay_reproduce_the_final_weights(cli, tmp_path):
    """Through the commands: `dataflex-run ... component=random`, `dataflex-export <run dir>`, then the replay
    overrides it prints: same ledger, bit-identical final_model weights."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from helpers import FAST

    common = [o for o in FAST if not o.startswith("trainer.max_steps")] + ["trainer.seed=5"]
    cadence = ["trainer.warmup_step=1", "trainer.update_step=2", "trainer.update_times=2"]
    cli(
        "trainer=dynamic_mix",
        "component=random",
        "component.seed=9",
        *common,
        *cadence,
        "trainer.output_dir=a",
    )
    exported = subprocess.run(
        [sys.executable, "-m", "dataflex.mixing.export", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    replay = exported.split("replay: dataflex-run ", 1)[1].split(" <the run's")[0].split()
    assert "trainer.update_step=2" in replay and (tmp_path / "a" / "schedule_trained_ids.json").is_file()
    cli(*replay, *common, "trainer.output_dir=b")
    assert export_trained_ids(tmp_path / "a") == export_trained_ids(tmp_path / "b")
    wa = load_file(tmp_path / "a" / "final_model" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "final_model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, overrides",
    [
        (
            "AdoMixer",
            ["component.start_step=3", "component.fit_stride=1", "component.smooth_window=3"]
            + ["component.e_floor=-2.0", "component.fit_steps=50", "trainer.update_step=1"]
            + ["trainer.warmup_step=1", "trainer.update_times=5"],
        ),
        (
            "AioliMixer",
            ["component.lp_rounds=1", "component.lp_steps=1", "component.round_steps=6"]
            + ["component.one_hot_factor=0.6", "component.eval_max_per_domain=2", "trainer.update_step=1"]
            + ["trainer.warmup_step=0", "trainer.update_times=6"],
        ),
    ],
)
def test_cli_smoke(cli, tmp_path, name, overrides):
    """`dataflex-run trainer=dynamic_mix component=ado|aioli` trains, logs the mixer's metrics, and changes
    the mixture."""
    from helpers import FAST

    common = [o for o in FAST if not o.startswith("trainer.max_steps")]
    component = "component=ado" if name == "AdoMixer" else "component=aioli"  # the presets
    cli("trainer=dynamic_mix", component, *overrides, *common, "trainer.output_dir=run")
    updates = history(tmp_path / "run")["updates"]
    assert len({tuple(u["proportions"]) for u in updates}) > 2
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert ("ado/exponent/" if name == "AdoMixer" else "aioli/benefit/") in metrics


@pytest.mark.parametrize("name", ["schedule", "ado", "aioli"])
def test_presets_compose_to_the_mixers(compose, name):
    cfg = compose("trainer=dynamic_mix", f"component={name}")
    assert cfg.component._target_ == f"dataflex.mixing.mixers.{name.capitalize()}Mixer"
    if name == "ado":
        assert cfg.component.fit_interval == 1000 and cfg.component.prior == "stratified"


def test_ado_and_aioli_keys_are_typed_and_checked_by_the_component_builder():
    """Their knobs are one typed `Config` on the class (the component contract): strings from the command
    line are typed, unknown keys and bad values fail naming the key, before the first step."""
    from dataflex.train.components import build_component

    def build(name: str, **params):
        target = f"dataflex.mixing.mixers.{name}"
        return build_component("mixer", {"_target_": target, **params}, None, mixture_manager=manager())

    ado = build("AdoMixer", start_step="4", prior="uniform", smooth_window=3)
    assert ado.config.start_step == 4 and ado.mix(None, 0).tolist() == [0.2] * 5
    assert build("AdoMixer", prior=[0.1, 0.2, 0.3, 0.2, 0.2]).config.prior == [0.1, 0.2, 0.3, 0.2, 0.2]
    with pytest.raises(ValueError, match=r"component\.smooth_window must be an odd number >= 1, got 4"):
        build("AdoMixer", smooth_window=4)
    with pytest.raises(ValueError, match=r"component\.fit_stide is not a parameter of .*AdoMixer"):
        build("AdoMixer", fit_stide=2)
    with pytest.raises(ValueError, match=r"component\.eta must be > 0, got -0\.1"):
        build("AioliMixer", eta=-0.1)
    with pytest.raises(ValueError, match=r"component\.lp_steps: Value 'two'"):
        build("AioliMixer", lp_steps="two")
    with pytest.raises(ValueError, match=r"component\.eval_max_per_domain must be null or >= 1, got 0"):
        build("AioliMixer", eval_max_per_domain=0)
    with pytest.raises(ValueError, match="Aioli measures eval losses"):  # typed fine; no eval data here
        build("AioliMixer", lp_steps="2", round_steps=60)
    with pytest.raises(TypeError, match="either config or keyword knobs"):
        AdoMixer(manager(), config=AdoMixer.Config(), start_step=3)
