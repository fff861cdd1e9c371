"""The prefetching loader (`trainer.dataloader_num_workers > 0`) trains exactly the ids, in the same order and
micro-batches, as the loop without workers, for every trainer, across update points, checkpoints and
epochs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dataflex.run import run
from dataflex.train.loader import StepFeeder
from dataflex.train.loop import TrainingLoop

TINY = (
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
    "data.max_samples=4",
    "trainer.per_device_train_batch_size=2",
    "trainer.gradient_accumulation_steps=2",
    "trainer.logging_steps=1",
    "trainer.eval_steps=0",
    "trainer.disable_tqdm=true",
    "trainer.save_final_model=false",
    "trainer.eval_on_start=false",
)

TRAINERS = {
    # 8 steps of 4 over 20 rows: crosses epochs (a batch straddles one) and a checkpoint after step 4
    "static": ("trainer=static", "trainer.max_steps=8", "trainer.save_steps=4"),
    "static_packed": (
        "trainer=static",
        "data.packing=true",
        "trainer.max_steps=4",
    ),  # packed rows collate in workers
    "dynamic_mix": (
        "trainer=dynamic_mix",
        "component=odm",
        "trainer.warmup_step=2",
        "trainer.update_step=2",
        "trainer.update_times=3",
    ),
    "dynamic_select": (
        "trainer=dynamic_select",
        "component=loss",
        "trainer.warmup_step=2",
        "trainer.update_step=2",
        "trainer.update_times=2",
    ),
    "dynamic_weight": (
        "trainer=dynamic_weight",
        "component=loss",
        "trainer.max_steps=6",
        "trainer.warmup_step=2",
    ),
}
DECISIONS = {
    "static": {4},
    "static_packed": set(),
    "dynamic_mix": {2, 4, 6},
    "dynamic_select": {2, 4},
    "dynamic_weight": set(range(7)),
}
"""Steps `done` whose end may change the next ids (updates, checkpoints; dynamic_weight: its next_indices
starts the weighter's step): the ids of step `done` must not be drawn before `on_step_end(done)`."""


@pytest.fixture
def trained(monkeypatch):
    """Per run: every step's micro-batches as the model saw them (sample ids and input ids)."""
    seen: list[list[tuple[int, list[int], torch.Tensor]]] = []
    original = TrainingLoop._forward

    def record(self, model, mb, ctx):
        seen[-1].append((ctx.step, mb["sample_ids"].tolist(), mb["input_ids"].clone()))
        return original(self, model, mb, ctx)

    monkeypatch.setattr(TrainingLoop, "_forward", record)
    return seen


@pytest.fixture
def events(monkeypatch):
    """The order of decisions: ("draw", step) when ids are drawn, ("end", done) after on_step_end(done)."""
    log: list[tuple[str, int]] = []
    draw, metrics = StepFeeder.draw, TrainingLoop._train_metrics

    def logged_draw(self, step, early=False):
        log.append(("draw", step))
        return draw(self, step, early)

    def logged_end(self, ctx, done, total):
        log.append(("end", done))
        return metrics(self, ctx, done, total)

    monkeypatch.setattr(StepFeeder, "draw", logged_draw)
    monkeypatch.setattr(TrainingLoop, "_train_metrics", logged_end)
    return log


def _losses(run_dir: Path) -> list[tuple[int, float, float]]:
    recs = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["epoch"]) for r in recs if "loss" in r]


@pytest.mark.parametrize("name", list(TRAINERS))
def test_prefetch_trains_exactly_the_unprefetched_ids(compose, tmp_path, trained, events, name):
    runs = {}
    for workers in (0, 2):
        trained.append([])
        events.clear()
        out = tmp_path / f"w{workers}"
        run(compose(*TRAINERS[name], *TINY, f"trainer.dataloader_num_workers={workers}"), out)
        runs[workers] = (trained[-1], _losses(out))
    (plain, plain_loss), (pre, pre_loss) = runs[0], runs[2]
    assert [(s, ids) for s, ids, _ in pre] == [(s, ids) for s, ids, _ in plain]
    assert all(torch.equal(a[2], b[2]) for a, b in zip(pre, plain))
    assert pre_loss == plain_loss  # same batches, same updates, same epoch counter
    assert len({s for s, _, _ in plain}) >= 4
    # with workers, step `done` was drawn before step done-1 ended exactly where the plan was fixed
    early = {
        s
        for s in range(1, 10)
        if ("draw", s) in events and events.index(("draw", s)) < events.index(("end", s))
    }
    assert not early & DECISIONS[name]
    if name != "dynamic_weight":
        assert early  # the loader did prefetch
