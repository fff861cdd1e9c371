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
}


@pytest.mark.parametrize(
    "preset",
    [
        "hierarchical",
        pytest.param("select_then_reorder", marks=pytest.mark.slow),
        pytest.param("mix_then_weight", marks=pytest.mark.slow),
        pytest.param("select_only", marks=pytest.mark.slow),
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
