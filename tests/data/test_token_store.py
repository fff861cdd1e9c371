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
    (tmp_path / "code.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "instruction": f"write code {i}{change}",
                    "input": "x" * (i % 3),
                    "output": f"print({i})" * (1 + i % 4),
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    (tmp_path / "chat.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "conversations": [
                        {"from": "human", "value": f"hello number {i}"},
                        {"from": "gpt", "value": f"hi {i} " * (i % 5 + 1)},
                    ]
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    (tmp_path / "web.txt").write_text("".join(f"plain web text line {i} with some words\n" for i in range(n)))
    (tmp_path / "dataset_info.yaml").write_text(
        "code:\n  path: code.jsonl\n  converter: alpaca\n  weight: 1.5\n"
        "chat:\n  path: chat.jsonl\n  converter: sharegpt\n"
        "web:\n  path: web.txt\n"
    )
    return str(tmp_path / "dataset_info.yaml")


def _pair(tok, tmp_path, mode, dataset="embedded://default", cutoff=48, **args):
    engine = DataEngine(DataArguments(dataset=dataset, cutoff_len=cutoff, mode=mode, **args))
    today = TokenizedData(engine, tok, cutoff, mode=mode)
    stored = TokenizedData(
        engine, tok, cutoff, mode=mode, store=StoreSettings(cache_dir=str(tmp_path / "cache"))
    )
    return today, stored


def _assert_same(today, stored):
    assert len(today) == len(stored)
    np.testing.assert_array_equal(today.domain_ids, stored.domain_ids)
    for i in range(len(today)):
        a, b = today[i], stored[i]
        assert (a.input_ids, a.labels, a.domain, a.sample_id) == (
            b.input_ids,
            b.labels,
            b.domain,
            b.sample_id,
        ), i


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


def _text_corpus(tmp_path, n=50):
    """Pretrain text in Arrow-backed files (two parquet parts of one dataset, a mapped column name, a bad
    row skipped by on_error=skip) and a jsonl file: the store reads these columns without converting rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "web").mkdir()
    for part in range(2):
        docs = [f"web page {part}-{i} " + "word " * (i % 7) for i in range(n)]
        pq.write_table(pa.table({"text": docs}), tmp_path / "web" / f"part{part}.parquet")
    body = [f"def f{i}(): return {i}" * (1 + i % 3) for i in range(n)]
    body[3] = None  # a row without text: skipped
    pq.write_table(pa.table({"body": body}), tmp_path / "code.parquet")
    (tmp_path / "books.jsonl").write_text(
        "".join(json.dumps({"text": f"chapter {i}. " * (1 + i % 4)}) + "\n" for i in range(n))
    )
    (tmp_path / "dataset_info.yaml").write_text(
        "web:\n  path: web\n  converter: text\n"
        "code:\n  path: code.parquet\n  converter: text\n  columns: {text: body}\n"
        "books:\n  path: books.jsonl\n  converter: text\n"
    )
    return str(tmp_path / "dataset_info.yaml")


def test_pretrain_text_columns_are_read_without_converting_rows(tok, tmp_path, monkeypatch):
    """The Arrow column path gives exactly today's blocks (and is the path taken); a dataset with another
    converter makes the build convert rows, with the same result."""

    def no_rows(*a, **k):
        raise AssertionError("converted rows although every dataset is Arrow-readable text")

    monkeypatch.setattr(ts, "_converted_text_batches", no_rows)
    dataset = _text_corpus(tmp_path)
    today, stored = _pair(tok, tmp_path, "pretrain", dataset=dataset, cutoff=16, on_error="skip")
    _assert_same(today, stored)
    assert len(stored) > 20 and set(stored.domain_ids.tolist()) == {0, 1, 2}
    monkeypatch.undo()
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(
        (tmp_path / "dataset_info.yaml").read_text() + "alpaca:\n  path: alpaca.jsonl\n  converter: alpaca\n"
    )
    (tmp_path / "alpaca.jsonl").write_text(
        "".join(json.dumps({"instruction": f"q{i}", "output": f"a {i} " * 9}) + "\n" for i in range(20))
    )
    engine = DataEngine(DataArguments(dataset=str(mixed), mode="pretrain", on_error="skip"))
    assert ts._arrow_texts(engine) is None
    _assert_same(*_pair(tok, tmp_path / "m", "pretrain", dataset=str(mixed), cutoff=16, on_error="skip"))


def test_sft_batched_encoding_equals_per_sample_encoding(tok, tmp_path):
    """`encode_many` (the build's one tokenizer call per batch) == `encode` per sample, for the simple and
    a named template (BOS piece, default system), with and without train_on_prompt, truncated rows too."""
    from dataflex.data.processor import SFTProcessor

    engine = DataEngine(DataArguments(dataset=_custom(tmp_path), cutoff_len=24))
    samples = [engine[i] for i in range(len(engine))]
    for template in ("simple", "llama3", "qwen"):
        for on_prompt in (False, True):
            proc = SFTProcessor(tok, 24, template, train_on_prompt=on_prompt)
            ids, trained, lengths = proc.encode_many(samples)
            assert lengths.max() == 24  # some rows are cut at cutoff_len
            ends = np.cumsum(lengths)
            for k, sample in enumerate(samples):
                x, y = proc.encode(sample)
                a, b = ends[k] - lengths[k], ends[k]
                assert ids[a:b].tolist() == x, (template, k)
                assert trained[a:b].tolist() == [int(v != -100) for v in y], (template, k)


def _stored(tok, cache, dataset, mode="sft", rebuild=False, cutoff=24):
    engine = DataEngine(DataArguments(dataset=dataset, cutoff_len=cutoff, mode=mode))
    return TokenizedData(
        engine, tok, cutoff, mode=mode, store=StoreSettings(cache_dir=str(cache), rebuild=rebuild)
    )


def _stores(cache):
    return sorted(p.name for p in store_root(cache).iterdir() if p.is_dir())


def test_cache_hit_miss_and_forced_rebuild(tok, tmp_path, monkeypatch, caplog):
    dataset, cache = _custom(tmp_path), tmp_path / "cache"
    first = _stored(tok, cache, dataset)
    assert len(_stores(cache)) == 1
    real_build = ts.build

    def no_build(*a, **k):
        raise AssertionError("built again on a cache hit")

    monkeypatch.setattr(ts, "build", no_build)
    with caplog.at_level(logging.INFO, logger="dataflex.data.token_store"):
        again = _stored(tok, cache, dataset)
    assert "loaded from the cache" in caplog.text
    _assert_same(first, again)
    # another cutoff_len is another key: a miss
    monkeypatch.setattr(ts, "build", real_build)
    _stored(tok, cache, dataset, cutoff=32)
    assert len(_stores(cache)) == 2
    # data.rebuild_cache=true builds the same key again
    calls = []
    monkeypatch.setattr(ts, "build", lambda *a, **k: (calls.append(1), real_build(*a, **k))[1])
    _stored(tok, cache, dataset, rebuild=True)
    assert calls == [1] and len(_stores(cache)) == 2


def test_changed_data_file_rebuilds_and_says_which(tok, tmp_path, caplog):
    dataset, cache = _custom(tmp_path), tmp_path / "cache"
    _stored(tok, cache, dataset)
    _custom(tmp_path, change=" (edited)")
    with caplog.at_level(logging.INFO, logger="dataflex.data.token_store"):
        edited = _stored(tok, cache, dataset)
    assert len(_stores(cache)) == 2
    assert "changed files" in caplog.text and "code.jsonl" in caplog.text
    assert "(edited)" in tok.decode(edited[0].input_ids)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "edit_manifest", "delete_array"])
def test_damaged_store_is_detected_and_rebuilt(tok, tmp_path, caplog, damage):
    dataset, cache = _custom(tmp_path), tmp_path / "cache"
    path = _stored(tok, cache, dataset).store.path
    tokens = path / "tokens.bin"
    if damage == "truncate":
        tokens.write_bytes(tokens.read_bytes()[:-7])
    elif damage == "flip_byte":
        raw = bytearray(tokens.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        tokens.write_bytes(bytes(raw))
    elif damage == "edit_manifest":
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["arrays"]["offsets"]["shape"] = [manifest["arrays"]["offsets"]["shape"][0] - 1]
        (path / "manifest.json").write_text(json.dumps(manifest))
    else:
        (path / "trained.bin").unlink()
    with pytest.raises(ts.CorruptStore):
        TokenStore(path)
    with caplog.at_level(logging.WARNING, logger="dataflex.data.token_store"):
        rebuilt = _stored(tok, cache, dataset)
    assert "damaged" in caplog.text and "rebuilding" in caplog.text
    TokenStore(path)  # valid again
    _assert_same(TokenizedData(DataEngine(DataArguments(dataset=dataset, cutoff_len=24)), tok, 24), rebuilt)


def test_failed_build_leaves_nothing(tok, tmp_path, monkeypatch):
    dataset, cache = _custom(tmp_path), tmp_path / "cache"
    real_write = ts._ArrayWriter.write

    def failing_write(self, values):
        real_write(self, values)
        raise RuntimeError("injected failure mid-write")

    monkeypatch.setattr(ts._ArrayWriter, "write", failing_write)
    with pytest.raises(RuntimeError, match="injected"):
        _stored(tok, cache, dataset)
    assert _stores(cache) == []  # no store and no temp folder
    monkeypatch.setattr(ts._ArrayWriter, "write", real_write)
    today = TokenizedData(DataEngine(DataArguments(dataset=dataset, cutoff_len=24)), tok, 24)
    _assert_same(today, _stored(tok, cache, dataset))


KILLED_BUILD = """
import sys, time
from dataflex.data import DataArguments, DataEngine, token_store as ts
from dataflex.data.processor import TokenizedData
from dataflex.models.tiny import load_tokenizer
real_write = ts._ArrayWriter.write
def slow_write(self, values):
    real_write(self, values)
    self.file.flush()
    print("writing", flush=True)
    time.sleep(600)
ts._ArrayWriter.write = slow_write
engine = DataEngine(DataArguments(dataset=sys.argv[1], cutoff_len=24))
TokenizedData(engine, load_tokenizer(), 24, store=ts.StoreSettings(cache_dir=sys.argv[2]))
"""


@pytest.mark.slow
def test_killed_build_leaves_no_usable_store(tok, tmp_path):
    import os
    import subprocess
    import sys

    dataset, cache = _custom(tmp_path), tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, dataset, str(cache)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    leftovers = [p.name for p in store_root(cache).iterdir() if p.is_dir()]
    assert leftovers and all(name.startswith(".build-") for name in leftovers)  # only the temp folder
    fresh = _stored(tok, cache, dataset)  # builds anew and removes the killed build's folder
    assert not [p for p in store_root(cache).iterdir() if p.name.startswith(".build-")]
    _assert_same(TokenizedData(DataEngine(DataArguments(dataset=dataset, cutoff_len=24)), tok, 24), fresh)


def test_disk_full_names_the_cache_dir_and_the_bytes(tok, tmp_path, monkeypatch):
    dataset, cache = _custom(tmp_path), tmp_path / "cache"
    monkeypatch.setattr(ts.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(
        ts.DiskFull,
        match=r"disk full while building the token store in .*cache.*data.cache_dir.*needs "
        r"about \d+ bytes, 100 are free",
    ):
        _stored(tok, cache, dataset)
    assert _stores(cache) == []


def test_disk_full_while_writing_leaves_nothing(tok, tmp_path, monkeypatch):
    dataset, cache = _custom(tmp_path), tmp_path / "cache"

    def enospc(self, values):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ts._ArrayWriter, "write", enospc)
    with pytest.raises(ts.DiskFull, match="data.cache_dir"):
        _stored(tok, cache, dataset)
    assert _stores(cache) == []


def test_unwritable_cache_dir_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match=r"data.cache_dir=.*a_file/cache.*not writable"):
        check_cache_dir(str(blocker / "cache"))


def test_run_refuses_an_unwritable_cache_dir_before_loading_data(compose, tmp_path, monkeypatch):
    from dataflex.run import run

    def _boom(*a, **k):
        raise AssertionError("data or a model was loaded")

    monkeypatch.setattr(DataEngine, "from_config", _boom)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = compose(f"data.cache_dir={blocker}/cache", f"trainer.output_dir={tmp_path / 'run'}")
    with pytest.raises(PermissionError, match="data.cache_dir"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_two_processes_build_each_store_once(cli, tmp_path):
    from helpers import FAST

    cache = tmp_path / "cache"
    run = [o for o in FAST if "max_steps" not in o] + [
        "trainer.max_steps=2",
        "trainer.eval_steps=0",
        "launcher.nproc_per_node=2",
        f"data.cache_dir={cache}",
    ]
    proc = cli(*run, f"trainer.output_dir={tmp_path / 'two'}")
    # one progress bar per build (whichever rank takes the lock first builds; the other maps its result)
    assert (proc.stdout + proc.stderr).count("tokenizing (token store):   0%") == 2  # train + eval
    assert len(_stores(cache)) == 2 and not list(store_root(cache).glob(".build-*"))
    # another job (of a sweep, or a resume) reuses both stores
    again = cli(*[o for o in run if "nproc" not in o], f"trainer.output_dir={tmp_path / 'again'}")
    assert "tokenizing (token store)" not in again.stdout + again.stderr
    assert (again.stdout + again.stderr).count("loaded from the cache") == 2


def test_store_pickles_as_its_path(tok, tmp_path):
    import pickle

    data = _stored(tok, tmp_path / "cache", _custom(tmp_path))
    blob = pickle.dumps(data.store)
    assert len(blob) < 2000  # the path, not the arrays
    again = pickle.loads(blob)
    assert isinstance(again.tokens, np.memmap) and again.item(3) == data.store.item(3)
