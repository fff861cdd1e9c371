"""data.val_size: datasets without an `eval` entry give up a seeded share of their rows as eval split."""

from __future__ import annotations

import logging

import pytest
from data_helpers import alpaca_rows, make_two_domain_info, text_of, write_jsonl

from dataflex.data import DataArguments, DataEngine
from dataflex.data.errors import DataError


def _texts(engine):
    return {text_of(engine[i], 0).split("\n")[0] for i in range(len(engine))}


def test_val_size_holds_out_rows_only_of_datasets_without_eval(tmp_path, caplog):
    info = make_two_domain_info(tmp_path)
    args = DataArguments(dataset=str(info), val_size=0.5)
    with caplog.at_level(logging.WARNING):
        train = DataEngine(args)
    assert any("['beta']" in m and "val_size" in m for m in caplog.messages)
    assert train.has_eval
    evald = DataEngine(args, split="eval")
    train_b = {t for t in _texts(train) if t.startswith("b")}
    eval_b = {t for t in _texts(evald) if t.startswith("b")}
    assert len(train_b) == 2 and len(eval_b) == 2 and not train_b & eval_b  # a split, not a copy
    assert train_b | eval_b == {f"b{i}" for i in range(4)}
    assert {t for t in _texts(train) if t.startswith("a")} == {f"a{i}" for i in range(10)}  # ds_a untouched
    assert {t for t in _texts(evald) if t.startswith("ae")} == {f"ae{i}" for i in range(3)}  # its own eval
    assert list(evald.domain_names) == ["alpha", "beta"]
    assert _texts(DataEngine(args, split="eval")) == _texts(evald)  # seeded: the same split every time


def test_val_size_as_a_row_count_and_without_any_eval(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", alpaca_rows(20, "d"))
    train = DataEngine(DataArguments(dataset=str(tmp_path / "d.jsonl"), val_size=5))
    evald = DataEngine(DataArguments(dataset=str(tmp_path / "d.jsonl"), val_size=5), split="eval")
    assert len(train) == 15 and len(evald) == 5 and not _texts(train) & _texts(evald)


def test_no_val_size_warns_naming_the_domains_without_eval(tmp_path, caplog):
    info = make_two_domain_info(tmp_path)
    with caplog.at_level(logging.WARNING):
        engine = DataEngine(DataArguments(dataset=str(info)))
    assert any("['beta']" in m and "data.val_size" in m for m in caplog.messages)
    assert len(DataEngine(DataArguments(dataset=str(info)), split="eval")) == 3 and len(engine) == 14


@pytest.mark.parametrize("value", [0, -0.1, 1.5])
def test_bad_val_size_is_refused(value):
    with pytest.raises(ValueError, match="data.val_size"):
        DataArguments(val_size=value)


def test_val_size_that_leaves_nothing_to_train_is_refused(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", alpaca_rows(3, "d"))
    with pytest.raises(DataError, match="data.val_size=3 holds out 3 of the 3 rows of dataset"):
        DataEngine(DataArguments(dataset=str(tmp_path / "d.jsonl"), val_size=3))
