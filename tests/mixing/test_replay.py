"""`trainer=static trainer.replay=<recipe>`: a dynamic_select and a dynamic_weight run, exported to their
trained-id recipe, replayed by the static trainer: the same ids in the same order and bit-identical final
weights (CPU); the recipe on another model trains the same ids (the transfer use); bad recipes fail with a
message naming the problem before the model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dataflex.data import DataArguments, DataEngine
from dataflex.mixing.export import export_trained_ids, recipe_for
from dataflex.mixing.recipe import RecipeError, check_recipe_data, data_fingerprint, load_recipe
from dataflex.train.loop import TrainingLoop
from dataflex.train.trainer.dynamic_select import DynamicSelectTrainer
from dataflex.train.trainer.dynamic_weight import DynamicWeightTrainer
from dataflex.train.trainer.static import StaticTrainer

from helpers import small_trainer

COMMON = dict(per_device_train_batch_size=8, learning_rate=1e-2, seed=3, save_final_model=False)


@pytest.fixture
def trained(monkeypatch):
    """Per run (keyed by run dir): the sample ids of every step, as the loop forwarded them."""
    seen: dict[str, list[list[int]]] = {}
    original = TrainingLoop._forward

    def record(self, model, mb, ctx):
        steps = seen.setdefault(str(self.run_dir), [])
        if len(steps) <= ctx.step:
            steps.append([])
        steps[ctx.step].extend(mb["sample_ids"].tolist())
        return original(self, model, mb, ctx)

    monkeypatch.setattr(TrainingLoop, "_forward", record)
    return seen


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _component(compose, *overrides: str):
    return OmegaConf.create(OmegaConf.to_container(compose(*overrides).component))


def _dynamic(kind: str, compose, run_dir):
    if kind == "select":  # the loss selector forwards the model between steps: replay must not depend on it
        component = _component(compose, "trainer=dynamic_select", "component=loss")
        args = dict(warmup_step=2, update_step=2, update_times=2, gradient_accumulation_steps=2, max_steps=0)
        return small_trainer(DynamicSelectTrainer, run_dir, component=component, **args, **COMMON)
    component = _component(
        compose, "trainer=dynamic_weight", "component=loss", "component.strategy=quadratic"
    )
    return small_trainer(
        DynamicWeightTrainer, run_dir, component=component, warmup_step=2, max_steps=6, **COMMON
    )


@pytest.mark.parametrize("kind", ["select", "weight"])
def test_static_replay_reproduces_the_dynamic_run(compose, tmp_path, trained, kind):
    dynamic = _dynamic(kind, compose, tmp_path / "dynamic")
    dynamic.train()
    recipe = recipe_for(tmp_path / "dynamic")
    assert recipe is not None and recipe["replayable"] and recipe["data"]["num_items"] == 160
    path = tmp_path / "trained_ids.json"
    path.write_text(json.dumps(recipe))
    weighted = [w for w in recipe["weights"] if w is not None]
    if kind == "weight":  # warmup steps are plain, weighted ones carry N x w_i != 1
        assert recipe["weights"][:2] == [None, None] and len(weighted) == 4
        assert all(not np.allclose(w, 1.0) for w in weighted)
    else:
        assert not weighted

    # the run's own loss_reduction (dynamic_weight's default is `sample`; dataflex-export's command says so)
    same = {"gradient_accumulation_steps": 2} if kind == "select" else {"loss_reduction": "sample"}
    replay = small_trainer(StaticTrainer, tmp_path / "replay", replay=str(path), **same, **COMMON)
    replay.train()
    assert trained[str(tmp_path / "replay")] == trained[str(tmp_path / "dynamic")] == recipe["sample_ids"]
    assert export_trained_ids(tmp_path / "replay") == export_trained_ids(tmp_path / "dynamic")
    a, b = _weights(dynamic), _weights(replay)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # the run dir itself is a recipe too (read from its ledger)
    assert load_recipe(tmp_path / "dynamic").as_dict()["sample_ids"] == recipe["sample_ids"]


def test_a_recipe_transfers_to_another_model(compose, tmp_path, trained):
    """The transfer use: the same recipe on a wider model trains the same ids in the same order."""
    dynamic = _dynamic("weight", compose, tmp_path / "dynamic")
    dynamic.train()
    other = small_trainer(
        StaticTrainer,
        tmp_path / "wide",
        replay=str(tmp_path / "dynamic"),
        model_kwargs={"hidden_size": 48, "intermediate_size": 96},
        loss_reduction="sample",
        **COMMON,
    )
    other.train()
    assert other.model.config.hidden_size == 48
    assert trained[str(tmp_path / "wide")] == trained[str(tmp_path / "dynamic")]
    assert (
        export_trained_ids(tmp_path / "wide")["weights"]
        == export_trained_ids(tmp_path / "dynamic")["weights"]
    )


def _recipe(tmp_path, **change) -> str:
    content = {
        "format": "dataflex-trained-ids/1",
        "steps": [1, 2],
        "sample_ids": [[0, 1, 2, 3], [4, 5, 6, 7]],
        "weights": [None, None],
        "skipped": [False, False],
        "data": None,
        **change,
    }
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(content))
    return str(path)


def test_bad_recipes_are_refused_naming_the_problem(tmp_path):
    with pytest.raises(RecipeError, match=r"trainer.replay=.*nope.json: no such file"):
        load_recipe(tmp_path / "nope.json")
    with pytest.raises(RecipeError, match="format 'x' is not"):
        load_recipe(_recipe(tmp_path, format="x"))
    with pytest.raises(RecipeError, match="step 2 has 3 ids, step 1 has 4"):
        load_recipe(_recipe(tmp_path, sample_ids=[[0, 1, 2, 3], [4, 5, 6]]))
    with pytest.raises(RecipeError, match="entry 2 is step 3"):
        load_recipe(_recipe(tmp_path, steps=[1, 3]))
    with pytest.raises(RecipeError, match="DoReMi-ish"):
        load_recipe(_recipe(tmp_path, replayable=False, not_replayable_because="DoReMi-ish"))

    engine = DataEngine(DataArguments(max_samples=8))  # 40 items
    identity = data_fingerprint(engine)
    assert identity is not None and identity["num_items"] == 40
    assert data_fingerprint(DataEngine(DataArguments(max_samples=8))) == identity  # deterministic
    far = load_recipe(_recipe(tmp_path, sample_ids=[[0, 1, 2, 3], [4, 5, 40, 7]]))
    with pytest.raises(RecipeError, match="step 2 trains sample id 40, but the training data has 40 items"):
        check_recipe_data(far, identity, 40)
    other = data_fingerprint(DataEngine(DataArguments(max_samples=9)))  # other rows
    assert other is not None and other["fingerprint"] != identity["fingerprint"]
    mismatch = load_recipe(_recipe(tmp_path, data=other))
    with pytest.raises(RecipeError, match="data fingerprint .* != .*the ids would name other samples"):
        check_recipe_data(mismatch, identity, 40)
    check_recipe_data(load_recipe(_recipe(tmp_path, data=identity)), identity, 40)


def test_replay_refuses_another_batch_size(tmp_path):
    trainer = small_trainer(StaticTrainer, tmp_path / "r", replay=_recipe(tmp_path), **COMMON)
    with pytest.raises(ValueError, match="trains 4 ids per step but this run's global batch is 8"):
        trainer.total_steps(8)
    assert trainer.total_steps(4) == 2


def test_run_refuses_a_recipe_for_other_data_before_the_model_loads(tmp_path, compose, monkeypatch):
    import dataflex.models.tiny
    from dataflex.run import run

    def no_model(**kwargs):
        raise AssertionError("the model was built before the recipe was checked")

    monkeypatch.setattr(dataflex.models.tiny, "build_tiny_model", no_model)
    identity = data_fingerprint(DataEngine(DataArguments(max_samples=9)))
    cfg = compose(
        "trainer=static", f"trainer.replay={_recipe(tmp_path, data=identity)}", "data.max_samples=8"
    )
    with pytest.raises(RecipeError, match="the ids would name other samples"):
        run(cfg, tmp_path / "out")
    missing = compose("trainer=static", f"trainer.replay={tmp_path / 'missing.json'}")
    with pytest.raises(RecipeError, match="no such file or run dir"):
        run(missing, tmp_path / "out2")


@pytest.mark.slow
@pytest.mark.parametrize(
    "run",
    [
        ("trainer=dynamic_weight", "component=loss", "component.strategy=quadratic", "trainer.warmup_step=1"),
        (
            "trainer=pipeline",
            "pipeline=mix_then_weight",
            "trainer.max_steps=10",
        ),  # ODM mix, then loss weights
    ],
    ids=["dynamic_weight", "pipeline"],
)
def test_cli_export_then_static_replay_reproduces_a_weighted_run(cli, tmp_path, run):
    """Through the commands: `dataflex-run <a weighted run>`, `dataflex-export <run dir>`, then the
    `replay ids:` command it prints: the same ledger and bit-identical final_model weights."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from helpers import FAST

    fast = [o for o in FAST if not o.startswith("trainer.max_steps")] if "trainer=pipeline" in run else FAST
    cli(*run, "trainer.seed=5", *fast, "trainer.output_dir=a")
    printed = subprocess.run(
        [sys.executable, "-m", "dataflex.mixing.export", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (tmp_path / "a" / "trained_ids.json").is_file()
    replay = printed.split("replay ids: dataflex-run ", 1)[1].split()
    assert replay[:2] == ["trainer=static", f"trainer.replay={tmp_path / 'a' / 'trained_ids.json'}"]
    assert "trainer.loss_reduction=sample" in replay and not any(o.startswith("component") for o in replay)
    cli(*replay, "trainer.output_dir=b")
    recorded = export_trained_ids(tmp_path / "a")
    assert recorded is not None and any(w is not None for w in recorded["weights"])
    assert export_trained_ids(tmp_path / "b") == recorded
    wa = load_file(tmp_path / "a" / "final_model" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "final_model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
