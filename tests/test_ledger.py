"""The data ledger records exactly what was trained (a killed + resumed run's ledger equals the uninterrupted
run's: tests/test_resume.py::test_killed_run_resumes_to_the_same_result)."""

from __future__ import annotations

import numpy as np
import pytest

from dataflex.train.ledger import DataLedger, default_stage, read_ledger
from dataflex.train.loop import TrainingLoop
from dataflex.train.trainer.static import StaticTrainer

from helpers import small_trainer


@pytest.fixture
def trained(monkeypatch):
    """(step, sample ids) of every micro-batch the model was actually trained on, in order."""
    seen: list[tuple[int, list[int]]] = []
    original = TrainingLoop._forward

    def record(self, model, mb, ctx):
        seen.append((ctx.step + 1, mb["sample_ids"].tolist()))
        return original(self, model, mb, ctx)

    monkeypatch.setattr(TrainingLoop, "_forward", record)
    return seen


def test_ledger_is_the_trained_ids(tmp_path, trained):
    trainer = small_trainer(
        StaticTrainer,
        tmp_path,
        max_steps=5,
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        save_steps=2,
    )
    trainer.train()
    table = read_ledger(tmp_path)
    rows = table.to_pylist()
    expected = [(step, i) for step, ids in trained for i in ids]
    assert [(r["step"], r["sample_id"]) for r in rows] == expected
    assert len(rows) == 5 * 6 and [r["position"] for r in rows] == list(range(6)) * 5
    names, domains = trainer.train_data.domain_names, trainer.train_data.domain_ids
    assert [r["domain"] for r in rows] == [names[domains[i]] for _, i in expected]
    assert {r["stage"] for r in rows} == {"static"} and {r["weight"] for r in rows} == {1.0}
    assert not any(r["skipped"] for r in rows)
    # flushed at the checkpoint steps 2 and 4 and at the end; data.json: which data the ids index
    assert sorted(p.name for p in (tmp_path / "ledger").iterdir()) == [
        "data.json",
        "part-000000001-000000002.parquet",
        "part-000000003-000000004.parquet",
        "part-000000005-000000005.parquet",
    ]


def _ledger(folder, steps: range, *, flush_every: int) -> DataLedger:
    """A ledger over 10 items of two domains, fed steps of 2 ids (ids 2s, 2s+1 at step s)."""

    class Ctx:
        skipped = False

        def __init__(self, step: int) -> None:
            self.indices = np.array([2 * step % 10, (2 * step + 1) % 10])

    ledger = DataLedger(
        folder, enabled=True, domain_names=["a", "b"], item_domains=np.arange(10) % 2, flush_every=flush_every
    )
    for s in steps:
        ledger.record(s, Ctx(s), trainer=object())
    return ledger


def test_truncate_drops_rows_after_the_resumed_step(tmp_path):
    ledger = _ledger(tmp_path, range(1, 8), flush_every=3)  # parts 1-3, 4-6; step 7 buffered
    ledger.close()
    assert read_ledger(tmp_path)["step"].to_pylist() == [s for s in range(1, 8) for _ in range(2)]
    resumed = DataLedger(tmp_path, enabled=True, domain_names=["a", "b"], item_domains=np.arange(10) % 2)
    resumed.truncate(5)  # part 4-6 straddles: rewritten as 4-5
    table = read_ledger(tmp_path)
    assert table["step"].to_pylist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert table["sample_id"].to_pylist() == [2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert table["domain"].to_pylist() == ["a", "b"] * 5
    assert table["stage"].to_pylist() == ["object"] * 10  # default_stage of a bare object
    resumed.truncate(0)
    assert read_ledger(tmp_path).num_rows == 0


def test_same_rows_whatever_the_flush_interval(tmp_path):
    _ledger(tmp_path / "a", range(1, 10), flush_every=1).close()
    _ledger(tmp_path / "b", range(1, 10), flush_every=4).close()
    assert read_ledger(tmp_path / "a").equals(read_ledger(tmp_path / "b"))


def test_default_stage_names():
    class DynamicSelectTrainer:
        component_config = {"_target_": "dataflex.train.selector.loss_selector.LossSelector"}

    class StaticTrainer:
        component_config = None

    assert default_stage(DynamicSelectTrainer()) == "dynamic_select:loss"
    assert default_stage(StaticTrainer()) == "static"


def test_report_view_counts_by_domain_and_stage(tmp_path):
    from dataflex.report import ledger_summary

    _ledger(tmp_path, range(1, 7), flush_every=2).close()
    summary = ledger_summary(read_ledger(tmp_path), bins=2)
    # steps 1-3 and 4-6: 6 rows each, ids 2s and 2s+1 -> 3 of domain a and 3 of b per bin
    assert summary["by_domain"] == [
        {"steps": "1-3", "a": 3, "b": 3, "total": 6},
        {"steps": "4-6", "a": 3, "b": 3, "total": 6},
    ]
    assert summary["by_stage"] == [
        {"steps": "1-3", "object": 6, "total": 6},
        {"steps": "4-6", "object": 6, "total": 6},
    ]
    assert summary["mean_weight"] == {"a": 1.0, "b": 1.0}
    assert summary["unique_samples"] == 10 and summary["rows"] == 12


def test_report_ledger_command(tmp_path, capsys):
    from dataflex.report import main

    _ledger(tmp_path, range(1, 5), flush_every=2).close()
    assert main(["ledger", str(tmp_path), "--bins", "2"]) == 0
    out = capsys.readouterr().out
    assert "8 trained rows, 8 distinct samples" in out and "| 1-2 | 2 | 2 | 4 |" in out
    assert (tmp_path / "report" / "ledger.md").is_file()
    assert (tmp_path / "report" / "ledger_by_domain.csv").read_text().splitlines()[0] == "steps,a,b,total"


def test_ledger_columns_equal_pyarrows_own_encoding():
    """The ledger builds its columns from numpy buffers (no pandas import, no compute-kernel init inside the
    training loop); the table must equal pyarrow's own `pa.array(...)` / `dictionary_encode()` of the same
    rows, dictionary order (first occurrence) included, also with a null stage."""
    import pyarrow as pa

    from dataflex.train.ledger import _arrow_column, _schema

    rng = np.random.default_rng(3)
    n = 41
    columns = {
        "step": np.repeat(np.arange(1, 6, dtype=np.int32), 9)[:n],
        "position": np.arange(n, dtype=np.int32),
        "sample_id": rng.integers(0, 10**12, n),
        "domain": np.asarray(rng.choice(["zeta", "älpha", "mid"], n), dtype=object),
        "weight": rng.random(n).astype(np.float32),
        "stage": np.asarray(["dynamic_mix:odm:p=0.25"] * (n - 1) + [None], dtype=object),
        "skipped": rng.random(n) < 0.3,
    }

    def reference(values, type_):
        if pa.types.is_dictionary(type_):
            return pa.array(list(values), type=type_.value_type).dictionary_encode()
        return pa.array(values, type=type_)

    ours = pa.Table.from_arrays([_arrow_column(columns[f.name], f.type) for f in _schema()], schema=_schema())
    theirs = pa.Table.from_arrays([reference(columns[f.name], f.type) for f in _schema()], schema=_schema())
    ours.validate(full=True)
    assert ours.equals(theirs)
    assert ours["domain"].chunk(0).dictionary.to_pylist() == list(dict.fromkeys(columns["domain"]))
    assert ours["stage"].null_count == 1
