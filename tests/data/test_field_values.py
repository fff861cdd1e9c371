"""DataEngine.field_values: a numeric column of the raw rows (precomputed scores), aligned with the index."""

from __future__ import annotations

import pytest
from data_helpers import alpaca_rows, write_jsonl

from dataflex.data import DataArguments, DataEngine
from dataflex.data.errors import DataError


def _info(folder, b_rows):
    write_jsonl(folder / "a.jsonl", [{**r, "q": 0.5 + i} for i, r in enumerate(alpaca_rows(3, "a"))])
    write_jsonl(folder / "b.jsonl", b_rows)
    info = folder / "dataset_info.yaml"
    info.write_text(
        "ds_a:\n  path: a.jsonl\n  converter: alpaca\n  domain: alpha\n"
        "ds_b:\n  path: b.jsonl\n  converter: alpaca\n  domain: beta\n"
    )
    return DataEngine(DataArguments(dataset=str(info)))


def test_scores_follow_the_engine_index(tmp_path):
    engine = _info(tmp_path, [{**r, "q": -i} for i, r in enumerate(alpaca_rows(2, "b"))])
    assert engine.field_values("q").tolist() == [0.5, 1.5, 2.5, 0.0, -1.0]
    assert engine.domain_ids.tolist() == [0, 0, 0, 1, 1]


def test_a_missing_or_non_numeric_score_names_the_row(tmp_path):
    engine = _info(tmp_path, [{**alpaca_rows(1, "b")[0], "q": "high"}])
    with pytest.raises(DataError, match="ds_b.*q='high', not a number"):
        engine.field_values("q")
    with pytest.raises(DataError, match="no field 'nope'"):
        engine.field_values("nope")
