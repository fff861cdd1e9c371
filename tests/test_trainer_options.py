"""HF-Trainer habits: warmup_steps, trainer.optim, load_best_model_at_end + metric_for_best_model + early
stopping, and the log lines (loss / lr / samples/s every logging_steps, per-domain eval, the chosen
component)."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch

from dataflex.config.trainer import TrainingArguments
from dataflex.run import validate
from dataflex.train.optim import build_optimizer, build_scheduler
from dataflex.train.trainer.static import StaticTrainer

from helpers import small_trainer


def _tracked(trainer, run_dir):
    """The trainer with metrics.jsonl written (small_trainer logs nowhere)."""
    from dataflex.tracking import JsonlTracker, TrackerGroup

    trainer.trackers = TrackerGroup([JsonlTracker(run_dir / "metrics.jsonl")])
    return trainer


def _records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_warmup_steps_ramp_the_learning_rate_linearly():
    args = TrainingArguments(warmup_steps=4, lr_scheduler_type="constant_with_warmup", learning_rate=1.0)
    opt = build_optimizer(torch.nn.Linear(2, 2), args)
    sched = build_scheduler(opt, args, total_steps=10)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])


@pytest.mark.parametrize(
    "override,needle",
    [
        ("trainer.warmup_steps=-1", "trainer.warmup_steps"),
        ("trainer.warmup_steps=3 trainer.warmup_ratio=0.1", "not both"),
        ("trainer.optim=adam_w", "trainer.optim='adam_w'"),
        ("trainer.optim=torch.optim.NoSuchOptim", "cannot import"),
        ("trainer.optim=sgd +trainer.optim_args.momentun=0.9", "['momentun'] are not arguments of SGD"),
        (
            "trainer.optim=sgd ++trainer.optim_args={nesterov:true,momentun:0.9}",
            "['momentun'] are not arguments of SGD",
        ),
        ("trainer.load_best_model_at_end=true trainer.eval_steps=2", "save_steps to a multiple"),
        (
            "trainer.load_best_model_at_end=true trainer.eval_steps=2 trainer.save_steps=3",
            "save_steps to a multiple",
        ),
        ("trainer.early_stopping_patience=2 trainer.eval_steps=0", "trainer.eval_steps > 0"),
        ("trainer.early_stopping_patience=0", "early_stopping_patience"),
        ("trainer.metric_for_best_model=accuracy", "metric_for_best_model"),
        (
            "trainer=dynamic_select component=less trainer.target_domain=target trainer.optim=sgd",
            "gradient_type=sgd",
        ),
    ],
)
def test_bad_options_are_refused_at_validation(compose, override, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        validate(compose(*override.split()))


def test_metric_for_best_model_must_be_a_logged_eval_metric(compose, tmp_path, monkeypatch):
    """Checked once the data's domains are known, before the model loads."""
    import dataflex.models.tiny as tiny
    from dataflex.run import run

    monkeypatch.setattr(tiny, "build_tiny_model", lambda **_: pytest.fail("the model was loaded"))
    cfg = compose(
        "trainer.load_best_model_at_end=true",
        "trainer.eval_steps=2",
        "trainer.save_steps=2",
        "trainer.metric_for_best_model=eval/loss/no_such_domain",
        "data.max_samples=8",
    )
    with pytest.raises(ValueError, match="no_such_domain.*eval/loss/target"):
        run(cfg, tmp_path / "run")


@pytest.mark.parametrize(
    "optim,optim_args,cls",
    [
        ("adamw_torch", {}, torch.optim.AdamW),
        ("adamw_torch_fused", {}, torch.optim.AdamW),
        ("sgd", {"momentum": 0.9}, torch.optim.SGD),
        ("adafactor", {}, None),
        ("torch.optim.RMSprop", {"alpha": 0.5}, torch.optim.RMSprop),
    ],
)
def test_each_optimizer_trains(tmp_path, optim, optim_args, cls):
    trainer = small_trainer(
        StaticTrainer, tmp_path, optim=optim, optim_args=optim_args, learning_rate=1e-2, weight_decay=0.1
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    from dataflex.train.loop import TrainingLoop

    loop = TrainingLoop(trainer)
    loop.run()
    opt = loop.optimizer.optimizer if hasattr(loop.optimizer, "optimizer") else loop.optimizer
    if cls is None:
        from transformers.optimization import Adafactor

        cls = Adafactor
    assert type(opt) is cls
    assert opt.param_groups[0]["initial_lr"] == 1e-2 and opt.param_groups[0]["weight_decay"] == 0.1
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups[1:])  # biases and norms
    for key, value in optim_args.items():
        assert opt.param_groups[0][key] == value
    if optim == "adamw_torch_fused":
        assert opt.param_groups[0]["fused"]
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def _best_run(tmp_path, **args):
    defaults = dict(
        max_steps=6,
        eval_steps=1,
        save_steps=1,
        learning_rate=1e-2,
        save_final_model=True,
        load_best_model_at_end=True,
    )
    trainer = _tracked(
        small_trainer(StaticTrainer, tmp_path, eval_data=True, **{**defaults, **args}), tmp_path
    )
    summary = trainer.train()
    trainer.trackers.finish()
    return trainer, summary


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_load_best_model_at_end_saves_the_best_checkpoint(tmp_path):
    """`greater_is_better=true` on a falling loss makes step 1 the best: the final model is checkpoint-1's."""
    trainer, summary = _best_run(tmp_path, greater_is_better=True, save_total_limit=2)
    losses = {r["step"]: r["eval/loss"] for r in _records(tmp_path) if "eval/loss" in r}
    assert max(losses, key=losses.get) == 1 and summary["best_step"] == 1
    assert summary["best_metric"] == {"eval/loss": pytest.approx(losses[1])}
    assert (tmp_path / "checkpoint-1").is_dir()  # protected from save_total_limit, as in HF
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-4",
        "checkpoint-5",
    ]
    final, best = _weights(tmp_path / "final_model"), _weights(tmp_path / "checkpoint-1")
    assert all(torch.equal(final[k], best[k]) for k in best)


def test_best_model_by_a_per_domain_metric(tmp_path):
    """The lowest `eval/loss/noise` over the evaluated checkpoints and the last step wins."""
    _, summary = _best_run(tmp_path, metric_for_best_model="loss/noise", learning_rate=3e-2)
    losses = {r["step"]: r["eval/loss/noise"] for r in _records(tmp_path) if "eval/loss/noise" in r}
    assert summary["best_step"] == min(losses, key=losses.get)
    if summary["best_step"] != 6:
        final, best = (
            _weights(tmp_path / "final_model"),
            _weights(tmp_path / f"checkpoint-{summary['best_step']}"),
        )
        assert all(torch.equal(final[k], best[k]) for k in best)


def test_early_stopping_stops_after_patience_evaluations(tmp_path):
    """A falling loss never 'improves' when greater is better: evals at 1, 2, 3 → stop at 3 (patience 2)."""
    trainer = _tracked(
        small_trainer(
            StaticTrainer,
            tmp_path,
            eval_data=True,
            max_steps=20,
            eval_steps=1,
            learning_rate=1e-2,
            early_stopping_patience=2,
            greater_is_better=True,
        ),
        tmp_path,
    )
    summary = trainer.train()
    trainer.trackers.finish()
    assert summary["steps"] == 3 and summary["stopped_early_at"] == 3
    assert max(r["step"] for r in _records(tmp_path)) == 3


def test_early_stopping_threshold_counts_small_gains_as_none(tmp_path):
    trainer = small_trainer(
        StaticTrainer,
        tmp_path,
        eval_data=True,
        max_steps=20,
        eval_steps=1,
        learning_rate=1e-2,
        early_stopping_patience=1,
        early_stopping_threshold=100.0,
    )
    assert trainer.train()["stopped_early_at"] == 2


def test_best_model_state_survives_a_resume(tmp_path):
    """The best step/value travel in the checkpoint, so a resumed run still restores the right weights."""
    _, full = _best_run(tmp_path / "full", greater_is_better=True)
    _best_run(tmp_path / "cut", greater_is_better=True, max_steps=6, save_final_model=False)
    for p in (tmp_path / "cut").glob("checkpoint-[45]"):
        import shutil

        shutil.rmtree(p)
    (tmp_path / "cut" / "summary.json").unlink()
    _, resumed = _best_run(tmp_path / "cut", greater_is_better=True, resume_from_checkpoint="auto")
    assert resumed["resumed_from"].endswith("checkpoint-3")
    assert resumed["best_step"] == full["best_step"] == 1


def test_log_lines_every_logging_step_and_eval(tmp_path, caplog):
    trainer = small_trainer(
        StaticTrainer,
        tmp_path,
        eval_data=True,
        max_steps=4,
        logging_steps=2,
        eval_steps=2,
        eval_on_start=True,
        disable_tqdm=True,
    )
    with caplog.at_level(logging.INFO, logger="dataflex"):
        trainer.train()
    lines = [r.getMessage() for r in caplog.records if r.name == "dataflex"]
    train = [ln for ln in lines if ln.startswith("step ")]
    assert [ln.split(" | ")[0] for ln in train] == ["step 2/4", "step 4/4"]
    assert all(" | loss " in ln and " | lr " in ln and "samples/s" in ln for ln in train)
    evals = [ln for ln in lines if ln.startswith("eval step")]
    assert [ln.split(" | ")[0] for ln in evals] == ["eval step 0", "eval step 2", "eval step 4"]
    assert all(f"| {d} " in evals[-1] for d in ("arith", "greet", "noise", "reverse", "target"))
    assert any(ln.startswith("trainer: StaticTrainer") for ln in lines)
    assert any(ln.startswith("optimizer: adamw_torch lr=") for ln in lines)


def test_the_chosen_component_is_logged_with_its_parameters(compose):
    from omegaconf import OmegaConf

    from dataflex.train.log_lines import run_description
    from dataflex.train.trainer.dynamic_mix import DynamicMixTrainer

    cfg = compose("trainer=dynamic_mix", "component=odm", "component.alpha=0.5")
    trainer = DynamicMixTrainer.__new__(DynamicMixTrainer)  # only what run_description reads
    trainer.args, trainer.component_config = OmegaConf.to_object(cfg.trainer), cfg.component
    lines = run_description(trainer)
    assert lines[0].startswith("trainer: DynamicMixTrainer (") and "warmup_step=50" in lines[0]
    assert lines[2].startswith("component: OdmMixer (") and "alpha=0.5" in lines[2]


@pytest.mark.parametrize(
    "name,key",
    [
        ("loss", "eval/loss"),
        ("eval_loss", "eval/loss"),
        ("loss/target", "eval/loss/target"),
        ("eval/ppl/noise", "eval/ppl/noise"),
    ],
)
def test_metric_names_as_hf_users_write_them(name, key):
    from dataflex.train.best_model import check_metric_available, metric_key

    assert metric_key(name) == key
    args = TrainingArguments(
        load_best_model_at_end=True, eval_steps=2, save_steps=2, metric_for_best_model=name
    )
    check_metric_available(args, ["target", "noise"])
    with pytest.raises(ValueError, match="need an eval split"):
        check_metric_available(args, None)
