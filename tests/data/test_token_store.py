"""The memory-mapped token store: items equal today's in-process tokenization exactly; built once per key,
invalidated by a changed data file, rebuilt when damaged, never half-written."""

from __future__ import annotations

import errno
import json
import logging
import shutil

import numpy as np
import pytest

from dataflex.data import DataArguments, DataEngine
from dataflex.data import token_store as ts
from dataflex.data.processor import TokenizedData
from dataflex.data.token_store import StoreSettings, TokenStore, check_cache_dir, store_root
from dataflex.models.tiny import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _custom(tmp_path, n=40, change=""):
    """Three domains in three formats; `weight` repeats rows, so SFT items map onto source rows."""
    (tmp_path / "code.jsonl").write_text("".join(
        json.dumps({"instruction": f"write code {i}{change}", "input": "x" * (i % 3), "output": f"print({i})" * (1 + i % 4)})
        + "\n" for i in range(n)))
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps({"conversations": [
        {"from": "human", "value": f"hello number {i}"}, {"from": "gpt", "value": f"hi {i} " * (i % 5 + 1)}]}) + "\n"
        for i in range(n)))
    (tmp_path / "web.txt").write_text("".join(f"plain web text line {i} with some words\n" for i in range(n)))
    (tmp_path / "dataset_info.yaml").write_text(
        "code:\n  path: code.jsonl\n  converter: alpaca\n  weight: 1.5\n"
        "chat:\n  path: chat.jsonl\n  converter: sharegpt\n"
        "web:\n  path: web.txt\n")
    return str(tmp_path / "dataset_info.yaml")


def _pair(tok, tmp_path, mode, dataset="embedded://default", cutoff=48, **args):
    engine = DataEngine(DataArguments(dataset=dataset, cutoff_len=cutoff, mode=mode, **args))
    today = TokenizedData(engine, tok, cutoff, mode=mode)
    stored = TokenizedData(engine, tok, cutoff, mode=mode, store=StoreSettings(cache_dir=str(tmp_path / "cache")))
    return today, stored


def _assert_same(today, stored):
    assert len(today) == len(stored)
    np.testing.assert_array_equal(today.domain_ids, stored.domain_ids)
    for i in range(len(today)):
        a, b = today[i], stored[i]
        assert (a.input_ids, a.labels, a.domain, a.sample_id) == (b.input_ids, b.labels, b.domain, b.sample_id), i


@pytest.mark.parametrize("mode", ["sft", "pretrain"])
def test_round_trip_embedded(tok, tmp_path, mode):
    today, stored = _pair(tok, tmp_path, mode, max_samples=60)
    _assert_same(today, stored)
    assert stored.store.tokens.dtype == np.uint16  # the tiny vocabulary fits 16 bits
    assert isinstance(stored.store.tokens, np.memmap)


@pytest.mark.parametrize("mode", ["sft", "pretrain"])
def test_round_trip_custom_data_with_repeats_and_epochs(tok, tmp_path, mode):
    today, stored = _pair(tok, tmp_path, mode, dataset=_custom(tmp_path), cutoff=24)
    _assert_same(today, stored)
    if mode == "sft":  # a new epoch draws other rows of the weighted dataset: still the same items
        today.set_epoch(1)
        stored.set_epoch(1)
        _assert_same(today, stored)
        assert stored.store.trained is not None and 0 < stored.store.trained.mean() < 1  # prompts masked
