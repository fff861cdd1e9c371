"""Index: exact size/weight counts, coverage before repeats, determinism across processes, domains."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_helpers import alpaca_rows, write_jsonl

from dataflex.data import DataArguments, DataEngine, DataError
from dataflex.data.plugins.index import build_index, size_weight_index, target_count


@pytest.fixture
def sized_info(tmp_path: Path) -> Path:
    for name, n in (("a", 10), ("b", 4), ("c", 7), ("d", 5)):
        write_jsonl(tmp_path / f"{name}.jsonl", alpaca_rows(n, name))
    (tmp_path / "dataset_info.yaml").write_text(
        "a: {path: a.jsonl, converter: alpaca, size: 3}\n"  # shrink: 3 of 10
        "b: {path: b.jsonl, converter: alpaca, size: 10}\n"  # grow: 2 passes + 2
        "c: {path: c.jsonl, converter: alpaca, weight: 2.5, domain: cd}\n"  # round(17.5) = 18
        "d: {path: d.jsonl, converter: alpaca, size: 4, weight: 0.5, domain: cd}\n"
    )  # round(2.0) = 2
    return tmp_path / "dataset_info.yaml"


def test_target_count() -> None:
    assert target_count(10, None, None) == 10
    assert target_count(10, 3, None) == 3
    assert target_count(10, None, 2.5) == 25
    assert target_count(7, None, 2.5) == 18  # round half to even: 17.5 -> 18
    assert target_count(10, 4, 0.5) == 2
    assert target_count(10, 0, None) == 0


def test_exact_counts_per_dataset_and_domain(sized_info: Path) -> None:
    e = DataEngine(DataArguments(dataset=str(sized_info)))
    idx = e.data_index
    assert np.bincount(idx.dataset_ids).tolist() == [3, 10, 18, 2]
    assert len(e) == 33
    assert e.domain_names == ["a", "b", "cd"] and e.domain_sizes.tolist() == [3, 10, 20]
    assert idx[0][0] == "a" and idx.dataset_names == ["a", "b", "c", "d"]


def _counts(rows: np.ndarray, length: int) -> np.ndarray:
    return np.bincount(rows, minlength=length)


def test_full_passes_plus_remainder_without_replacement(sized_info: Path) -> None:
    e = DataEngine(DataArguments(dataset=str(sized_info)))
    idx = e.data_index
    b = idx.row_ids[idx.dataset_ids == 1]  # 10 draws of 4 rows: every row twice, two rows thrice
    assert sorted(_counts(b, 4).tolist()) == [2, 2, 3, 3]
    a = idx.row_ids[idx.dataset_ids == 0]  # 3 of 10 rows: all distinct
    assert len(set(a.tolist())) == 3
    c = idx.row_ids[idx.dataset_ids == 2]
    assert sorted(_counts(c, 7).tolist()) == [2, 2, 2, 3, 3, 3, 3]


@pytest.mark.parametrize(
    "length, size, weight",
    [(10, 3, None), (4, 10, None), (7, None, 2.5), (9, 9, None), (5, None, 0.3), (1, 3, None)],
)
def test_coverage_before_repeats_within_and_across_epochs(
    length: int, size: int | None, weight: float | None
) -> None:
    stream = np.concatenate(
        [size_weight_index(length, size, weight, seed=7, key=2, epoch=e) for e in range(6)]
    )
    n = target_count(length, size, weight)
    assert len(stream) == 6 * n
    for t in range(1, len(stream) + 1):  # every prefix: counts differ by at most one
        c = _counts(stream[:t], length)
        assert c.max() - c.min() <= 1
    epochs = [size_weight_index(length, size, weight, seed=7, key=2, epoch=e) for e in range(2)]
    if 2 * n <= length:  # shrinking: the next epoch continues with rows not yet seen
        assert not set(epochs[0].tolist()) & set(epochs[1].tolist())


def test_set_epoch_moves_the_window(sized_info: Path) -> None:
    e = DataEngine(DataArguments(dataset=str(sized_info)))
    seen = []
    for ep in range(4):
        e.set_epoch(ep)
        assert len(e) == 33
        seen.append(e.data_index.row_ids[e.data_index.dataset_ids == 0])
    a = np.concatenate(seen)  # dataset a: 3 rows per epoch over 10 rows -> all 10 rows by epoch 4
    assert len(set(a[:9].tolist())) == 9 and set(a.tolist()) == set(range(10))
    e.set_epoch(0)
    assert np.array_equal(e.data_index.row_ids[e.data_index.dataset_ids == 0], seen[0])


def test_seed_changes_draw_but_not_counts(sized_info: Path) -> None:
    a = DataEngine(DataArguments(dataset=str(sized_info), seed=1)).data_index
    b = DataEngine(DataArguments(dataset=str(sized_info), seed=2)).data_index
    assert np.array_equal(a.dataset_ids, b.dataset_ids) and not np.array_equal(a.row_ids, b.row_ids)


_HASH_CODE = """
import hashlib, sys
from dataflex.data import DataArguments, DataEngine
e = DataEngine(DataArguments(dataset=sys.argv[1], seed=11))
h = hashlib.sha256()
for arr in (e.data_index.dataset_ids, e.data_index.row_ids, e.domain_ids):
    h.update(arr.tobytes())
print(h.hexdigest())
"""


def test_identical_index_in_two_processes(sized_info: Path) -> None:
    """This process and a fresh one (another hash seed) build byte-identical index arrays."""
    other = subprocess.run(
        [sys.executable, "-c", _HASH_CODE, str(sized_info)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    e = DataEngine(DataArguments(dataset=str(sized_info), seed=11))
    h = hashlib.sha256()
    for arr in (e.data_index.dataset_ids, e.data_index.row_ids, e.domain_ids):
        h.update(arr.tobytes())
    assert other == h.hexdigest()


def test_zero_size_needs_another_dataset_in_the_domain(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", alpaca_rows(3))
    write_jsonl(tmp_path / "b.jsonl", alpaca_rows(3))
    (tmp_path / "ok.yaml").write_text(
        "a: {path: a.jsonl, size: 0, domain: x}\nb: {path: b.jsonl, domain: x}\n"
    )
    assert len(DataEngine(DataArguments(dataset=str(tmp_path / "ok.yaml")))) == 3
    (tmp_path / "bad.yaml").write_text("a: {path: a.jsonl, weight: 0}\nb: {path: b.jsonl}\n")
    with pytest.raises(DataError, match=r"domain\(s\) \['a'\] have no samples"):
        DataEngine(DataArguments(dataset=str(tmp_path / "bad.yaml")))


def test_build_index_is_vectorised_and_compact() -> None:
    idx = build_index(
        [3_000_000, 1_000_000], [None, 2_500_000], [1.5, None], [0, 1], ["x", "y"], ["X", "Y"], seed=0
    )
    assert len(idx) == 7_000_000
    assert idx.dataset_ids.dtype == np.int32 and idx.row_ids.dtype == np.int64
    assert np.bincount(idx.row_ids[:4_500_000]).min() == 1  # 1.5 passes over 3M rows: all rows at least once
