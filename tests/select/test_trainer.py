"""`trainer=dynamic_select` end to end (in process): the trained sample ids are exactly the warmup
samples then each selection; selections, scores and domain counts are saved and logged; bad schedules
and missing target sets fail early, naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataflex.run import run, validate
from dataflex.train.trainer.dynamic_select import DynamicSelectTrainer, candidate_pool, selection_permutation

TINY = (
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
    "data.max_samples=40",
    "trainer.per_device_train_batch_size=4",
    "trainer.logging_steps=1",
    "trainer.eval_steps=0",
    "trainer.max_eval_samples_per_domain=4",
    "trainer.disable_tqdm=true",
    "trainer.save_final_model=false",
    "trainer.eval_on_start=false",
)
SCHEDULE = (
    "trainer=dynamic_select",
    "trainer.warmup_step=2",
    "trainer.update_step=3",
    "trainer.update_times=2",
)


@pytest.fixture
def trained(monkeypatch):
    """Records, per step, the sample ids the model was actually fed (gathered over ranks)."""
    seen: list[list[int]] = []
    original = DynamicSelectTrainer.on_step_end

    def record(self, done, ctx):
        seen.append(ctx.gathered()["sample_ids"].tolist())
        return original(self, done, ctx)

    monkeypatch.setattr(DynamicSelectTrainer, "on_step_end", record)
    return seen


def _run(compose, tmp_path: Path, *overrides: str) -> Path:
    cfg = compose(*SCHEDULE, *TINY, *overrides)
    run(cfg, tmp_path)
    return tmp_path


def _selection(run_dir: Path, update: int) -> dict:
    return json.loads((run_dir / "selection" / f"update_{update:03d}.json").read_text())


def _metrics(run_dir: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec["step"], {}).update(rec)
    return out


def test_trained_ids_are_exactly_the_warmup_then_each_selection(compose, tmp_path, trained):
    run_dir = _run(
        compose, tmp_path, "component=loss", "component.focus=high", "trainer.candidate_pool_size=30"
    )
    warm = json.loads((run_dir / "selection" / "warmup.json").read_text())["selected"]
    first, second = _selection(run_dir, 1), _selection(run_dir, 2)
    assert len(warm) == 2 * 4 and len(first["selected"]) == len(second["selected"]) == 3 * 4
    flat = [i for step in trained for i in step]
    assert flat == warm + first["selected"] + second["selected"]
    assert len(trained) == 2 + 3 * 2
    assert (first["step"], second["step"]) == (2, 5)

    pools = [candidate_pool(200, 30, 42, update) for update in (1, 2)]
    assert not np.array_equal(pools[0], pools[1])
    for rec, pool in zip((first, second), pools):  # each selection comes from its own seeded pool of 30
        assert rec["num_candidates"] == 30
        assert set(rec["selected"]) <= set(pool.tolist())
        assert len(rec["scores"]) == len(rec["selected"])

    metrics = _metrics(run_dir)
    names = ["greet", "arith", "reverse", "noise", "target"]
    for rec in (first, second):
        logged = metrics[rec["step"]]
        counts = rec["domain_counts"]
        for name in names:
            assert logged[f"select/domain_fraction/{name}"] == pytest.approx(counts[name] / 12)
        pool_shares = [logged[f"select/pool_fraction/{name}"] for name in names]  # the plots' base rate
        assert sum(pool_shares) == pytest.approx(1.0)
        assert all(abs(p * 30 - round(p * 30)) < 1e-9 for p in pool_shares)  # shares of the 30 candidates
        assert logged["select/score_max"] == pytest.approx(max(rec["scores"]))
        assert logged["select/score_mean"] == pytest.approx(np.mean(rec["scores"]))
    assert "select/domain_fraction/target" not in metrics[1]
    summary = [json.loads(x) for x in (run_dir / "selection" / "summary.jsonl").read_text().splitlines()]
    assert [s["update"] for s in summary] == [1, 2]


def test_without_warmup_the_first_selection_precedes_step_zero(compose, tmp_path, trained):
    run_dir = _run(compose, tmp_path, "component=random", "trainer.warmup_step=0")
    first, second = _selection(run_dir, 1), _selection(run_dir, 2)
    assert first["step"] == 0 and second["step"] == 3
    assert [i for step in trained for i in step] == first["selected"] + second["selected"]
    assert not (run_dir / "selection" / "warmup.json").exists()
    assert "select/domain_fraction/greet" in _metrics(run_dir)[1]  # the setup selection's metrics, at step 1


def test_selection_does_not_disturb_training_randomness(compose, tmp_path):
    a = _run(compose, tmp_path / "a", "component=random")
    b = _run(compose, tmp_path / "b", "component=random")
    assert _selection(a, 2)["selected"] == _selection(b, 2)["selected"]
    assert (
        json.loads((a / "summary.json").read_text())["final_eval"]
        == json.loads((b / "summary.json").read_text())["final_eval"]
    )


@pytest.mark.parametrize(
    "override,needle",
    [
        ("trainer.update_step=0", "trainer.update_step"),
        ("trainer.warmup_step=-1", "trainer.warmup_step"),
        ("trainer.update_times=0", "trainer.update_times"),
        ("trainer.max_steps=5", "trainer.max_steps"),
        ("trainer.candidate_pool_size=0", "trainer.candidate_pool_size"),
    ],
)
def test_bad_schedules_fail_validation(compose, override, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        validate(compose(*SCHEDULE, "component=random", override))


def test_consistent_max_steps_is_accepted(compose):
    validate(compose(*SCHEDULE, "component=random", "trainer.max_steps=8"))


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (("component=less",), "component.target_domain"),
        (("component=nice", "component.target_domain=target"), "component.reward_model"),
        (("component=loss", "component.focus=middle"), "component.focus"),
        (("component=tsds", "trainer.target_domain=target", "component.alpha=1.5"), "component.alpha"),
        ((), "component=<random"),
        (("component=random", "trainer.candidate_pool_size=5"), "trainer.candidate_pool_size"),
    ],
)
def test_bad_components_fail_before_training(compose, tmp_path, overrides, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")) as err:
        _run(compose, tmp_path, *overrides)
    assert not (tmp_path / "selection").exists() or "candidate_pool_size" in str(err.value)


def test_trainer_level_target_serves_targeted_selectors(compose, tmp_path):
    run_dir = _run(compose, tmp_path, "component=near", "trainer.target_domain=target")
    rec = _selection(run_dir, 1)
    assert rec["domain_counts"]["target"] > 12 * 0.2


def test_user_selector_by_target_outside_the_package(compose, tmp_path, trained, monkeypatch):
    pkg = tmp_path / "user_code"
    pkg.mkdir()
    (pkg / "my_selectors.py").write_text(
        "from dataflex.core.registry import register_selector\n"
        "from dataflex.train.selector.base_selector import logger, Selector\n\n"
        "@register_selector('my_last')\n"
        "class LastSelector(Selector):\n"
        "    def __init__(self, dataset, accelerator, data_collator, cache_dir, offset=0):\n"
        "        super().__init__(dataset, accelerator, data_collator, cache_dir)\n"
        "        self.offset = offset\n"
        "        logger.info('LastSelector initialized.')\n\n"
        "    def select(self, model, step_id, num_samples, **kwargs):\n"
        "        n = len(self.dataset)\n"
        "        return [n - 1 - self.offset - i for i in range(num_samples)]\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    run_dir = _run(
        compose,
        tmp_path / "run",
        "component=custom",
        "component._target_=my_selectors.LastSelector",
        "+component.offset=3",
        "trainer.selection_order=selector",
    )
    flat = [i for step in trained for i in step]
    assert flat[8:20] == [200 - 1 - 3 - i for i in range(12)]
    assert _selection(run_dir, 2)["selected"] == [200 - 1 - 3 - i for i in range(12)]
    from dataflex.core.registry import get_component

    assert get_component("selector", "my_last").__name__ == "LastSelector"


def test_component_checks_run_without_loading_anything(compose):
    """`DynamicSelectTrainer.validate_config` checks trainer + component from the composed config alone."""
    with pytest.raises(ValueError, match=r"component\.target_domain"):
        DynamicSelectTrainer.validate_config(compose(*SCHEDULE, "component=tsds"))
    with pytest.raises(ValueError, match=r"component\.quantiles"):
        DynamicSelectTrainer.validate_config(
            compose(*SCHEDULE, "component=loss", "component.quantiles=[0.7,0.2]")
        )
    DynamicSelectTrainer.validate_config(
        compose(*SCHEDULE, "component=near", "component.indices_path=/x.npy")
    )
    DynamicSelectTrainer.validate_config(
        compose(*SCHEDULE, "component=custom", "component._target_=a.B", "+component.anything=1")
    )


@pytest.mark.parametrize("warmup", [2, 0])
def test_resumed_run_trains_the_same_ids_as_an_uninterrupted_one(compose, tmp_path, trained, warmup):
    """Checkpoint mid-phase (step 4), resume in a fresh run dir: the remaining steps train the same ids and
    the later selections are the same (delta_loss: its baseline is part of the checkpointed state)."""
    common = ("component=delta_loss", f"trainer.warmup_step={warmup}", "trainer.save_steps=4")
    full = _run(compose, tmp_path / "full", *common)
    uninterrupted = [list(x) for x in trained]
    trained.clear()
    checkpoint = full / "checkpoint-4"
    assert (checkpoint / "training_state.pt").is_file()
    resumed = _run(compose, tmp_path / "resumed", *common, f"trainer.resume_from_checkpoint={checkpoint}")
    assert trained == uninterrupted[4:]
    for update, step in ((1, warmup), (2, warmup + 3)):
        redone = (resumed / "selection" / f"update_{update:03d}.json").exists()
        assert redone == (step > 4)  # selections before the checkpoint are restored, not redone
        if redone:
            assert _selection(resumed, update)["selected"] == _selection(full, update)["selected"]


def test_less_with_kronecker_features_runs_end_to_end(compose, tmp_path):
    """proj_type=kronecker (SGD features, never formed per sample) selects each phase with LESS scores."""
    run_dir = _run(
        compose,
        tmp_path,
        "component=less",
        "component.target_domain=target",
        "component.proj_type=kronecker",
        "component.gradient_type=sgd",
        "component.proj_dim=256",
        "trainer.candidate_pool_size=30",
    )
    for update in (1, 2):
        sel = _selection(run_dir, update)
        assert len(sel["selected"]) == len(set(sel["selected"])) == 3 * 4
        assert len(sel["scores"]) == 12 and all(-1.0 <= s <= 1.0 for s in sel["scores"])


class TargetFirstSelector:
    """A top-k selector: score = 1 for `target` rows, else 0, plus a tiny id-based tie-breaker; returns the
    picks sorted by descending score (as top_k does), so in the returned order every `target` row comes
    first."""

    def __init__(self, dataset, accelerator, data_collator, cache_dir):
        self.dataset = dataset
        self.last_scores = None

    def select(self, model, step_id, num_samples, candidates=None, **kwargs):
        ids = np.arange(len(self.dataset)) if candidates is None else np.asarray(candidates)
        target = self.dataset.domain_names.index("target")
        scores = (self.dataset.domain_ids[ids] == target) + ids / (10 * len(self.dataset))
        target_rows = ids[scores >= 1][: num_samples // 2]  # exactly half of the selection is `target`
        others = ids[scores < 1]
        picked = np.concatenate([target_rows, others[-(num_samples - len(target_rows)) :]])
        s = (self.dataset.domain_ids[picked] == target) + picked / (10 * len(self.dataset))
        order = np.argsort(-s, kind="stable")
        self.last_scores = s[order]
        return picked[order].tolist()


@pytest.mark.parametrize("order", ["shuffle", "selector"])
def test_selections_are_trained_in_a_seeded_random_order_not_by_score(compose, tmp_path, trained, order):
    """Item 1 of issue 13: a top-k selection (sorted by score) must not become a score-sorted curriculum. The
    default trains it in a random order seeded by (seed, update): the trained scores are not monotone and
    every half of the phase holds the selection's `target` share within hypergeometric noise; `selector` keeps
    the returned (sorted) order. Scores stay attached to their ids either way."""
    run_dir = _run(
        compose,
        tmp_path,
        "component=custom",
        f"component._target_={__name__}.TargetFirstSelector",
        "trainer.update_step=10",
        "trainer.update_times=2",
        f"trainer.selection_order={order}",
    )
    n, batch = 40, 4
    for update in (1, 2):
        rec = _selection(run_dir, update)
        start = 2 + (update - 1) * 10  # warmup 2 steps, then 10 steps per phase
        trained_ids = [i for step in trained[start : start + 10] for i in step]
        assert trained_ids == rec["selected"]
        scores = np.asarray(rec["scores"])
        is_target = scores >= 1
        assert is_target.sum() == n // 2  # scores were recorded per id: the target ids carry score >= 1
        monotone = bool(np.all(np.diff(scores) <= 0))
        if order == "selector":
            assert monotone and is_target[: n // 2].all()
            continue
        assert not monotone
        # the first half of the phase: hypergeometric(40, 20 target, 20 drawn) has sd ~1.6 around 10
        assert abs(int(is_target[: n // 2].sum()) - n // 4) <= 5
        pure = [b.all() or not b.any() for b in is_target.reshape(-1, batch)]
        assert sum(pure) <= 5  # sorted: all 10 batches are one domain; shuffled: ~1 expected
        returned = np.asarray(rec["selected"])[np.argsort(-scores, kind="stable")]  # the selector's own order
        perm = selection_permutation(n, 42, update)
        assert rec["selected"] == returned[perm].tolist()  # seeded by (trainer.seed, update number)
