"""Every preset composes, validates and trains through `dataflex-run trainer=pipeline pipeline=<preset>`; its
plans and ledger agree (the ledger is the plans' ids, each with the preset's stage chain)."""

from __future__ import annotations

import json

import pytest

from dataflex.train.ledger import read_ledger

from helpers import FAST

CHAINS = {
    "hierarchical": "filter:loss>mix:odm>reorder:saw",
    "select_then_reorder": "filter:loss>reorder:folding",
    "mix_then_weight": "mix:odm",
    "select_only": "draw:loss",
    "prune_then_mix": "prune:infobatch>mix:odm",
}


@pytest.mark.parametrize(
    "preset",
    [
        "hierarchical",
        pytest.param("select_then_reorder", marks=pytest.mark.slow),
        pytest.param("mix_then_weight", marks=pytest.mark.slow),
        pytest.param("select_only", marks=pytest.mark.slow),
        pytest.param("prune_then_mix", marks=pytest.mark.slow),
    ],
)
def test_preset_runs_and_its_ledger_is_its_plans(cli, tmp_path, preset):
    out = tmp_path / preset
    fast = [o for o in FAST if not o.startswith("trainer.max_steps")]
    cli(*fast, "trainer=pipeline", f"pipeline={preset}", "trainer.max_steps=10", f"trainer.output_dir={out}")
    plans = [json.loads(p.read_text()) for p in sorted((out / "pipeline").glob("plan_*.json"))]
    assert [p["boundary"] for p in plans] == [0, 5]
    ledger = read_ledger(out).to_pylist()
    assert [r["sample_id"] for r in ledger] == [i for p in plans for i in p["ids"]]
    assert {r["stage"].split("+")[0] for r in ledger} == {CHAINS[preset]}
    weighted = {r["stage"] for r in ledger if r["step"] > 5}
    has_weights = preset in ("hierarchical", "mix_then_weight")
    assert all(s.endswith("+weight:loss") for s in weighted) == has_weights
    if preset in ("hierarchical", "select_then_reorder"):
        assert {p["pool"] for p in plans} == {160}  # the loss filter keeps half of the 320 items


def test_precomputed_scores_filter_and_order_the_data(cli, tmp_path):
    """A precomputed filter (top half by file score) then a static sorting of the same file's scores as the
    budget-taker: the ledger is the kept half in ascending score order; a file of the wrong length fails
    before the model loads, naming the stage's key."""
    import numpy as np

    from dataflex.data import DataArguments, DataEngine

    n = len(DataEngine(DataArguments(max_samples=64), split="train"))
    scores = np.random.default_rng(5).permutation(n).astype(np.float64)
    np.save(tmp_path / "s.npy", scores)
    path = tmp_path / "s.npy"
    stages = (
        f"pipeline.stages=[{{kind: select, use: precomputed, mode: filter, keep_ratio: 0.5, every: 20,"
        f" component: {{score_path: {path}}}}},"
        f" {{kind: reorder, component: {{pattern: sorting, score_source: file, score_path: {path}}}}}]"
    )
    fast = [o for o in FAST if not o.startswith("trainer.max_steps")]
    out = tmp_path / "run"
    cli(*fast, "trainer=pipeline", stages, "trainer.max_steps=10", f"trainer.output_dir={out}")
    kept = np.argsort(-scores, kind="stable")[: n // 2]
    expected = kept[np.argsort(scores[kept], kind="stable")]
    ledger = read_ledger(out).to_pylist()
    assert [r["sample_id"] for r in ledger] == expected[: len(ledger)].tolist()
    assert {r["stage"] for r in ledger} == {"filter:precomputed>reorder:sorting"}
    np.save(tmp_path / "s.npy", scores[:-1])
    bad = cli(*fast, "trainer=pipeline", stages, f"trainer.output_dir={tmp_path / 'bad'}", check=False)
    assert bad.returncode != 0
    assert "pipeline.stages[0].component.score_path" in bad.stderr + bad.stdout
    assert "optimizer:" not in bad.stderr + bad.stdout  # refused before the model and trainer were built
