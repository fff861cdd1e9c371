"""The DataEngine contract: embedded default, eval split, domains, every indexing form."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from data_helpers import make_two_domain_info, text_of, write_jsonl
from torch.utils.data import Dataset

import dataflex.data.embedded
from dataflex.data import DataArguments, DataEngine
from dataflex.data.plugins.index import DataIndex

EMBEDDED = Path(dataflex.data.embedded.__file__).parent / "default"
DOMAINS = ["greet", "arith", "reverse", "noise", "target"]


@pytest.fixture
def two_domain_info(tmp_path: Path) -> Path:
    return make_two_domain_info(tmp_path)


@pytest.fixture(scope="module")
def engine() -> DataEngine:
    return DataEngine(DataArguments())


def test_embedded_default_is_served(engine: DataEngine) -> None:
    assert isinstance(engine, Dataset)
    assert len(engine) == 10_000
    assert engine.domain_names == DOMAINS
    assert engine.domain_sizes.tolist() == [2000] * 5
    assert engine.has_eval and not engine.streaming
    assert isinstance(engine.data_index, DataIndex)
    assert set(engine.datasets) == set(DOMAINS) and set(engine.dataset_infos) == set(DOMAINS)


def test_embedded_resolves_inside_package_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    e = DataEngine(DataArguments(dataset="embedded://default", max_samples=5))
    assert Path(e.dataset_infos["greet"].path) == (EMBEDDED / "greet" / "train.jsonl").resolve()
    assert len(e) == 25


def test_sample_format_alpaca(engine: DataEngine) -> None:
    import json

    raw = json.loads((EMBEDDED / "arith" / "train.jsonl").read_text().splitlines()[0])
    i = int(engine.domain_rows(engine.domain_names.index("arith"))[0])
    s = engine[i]
    assert s["_dataset_name"] == "arith" and s["_domain"] == "arith"
    assert [m["role"] for m in s["messages"]] == ["user", "assistant"]
    assert [m["loss_weight"] for m in s["messages"]] == [0.0, 1.0]
    assert s["messages"][0]["content"] == [
        {"type": "text", "value": raw["instruction"] + "\n" + raw["input"]}
    ]
    assert text_of(s) == raw["output"]


def test_domain_ids_aligned_with_samples(engine: DataEngine) -> None:
    ids = engine.domain_ids
    assert ids.dtype == np.int64 and ids.shape == (len(engine),)
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(engine), 50):
        assert engine[int(i)]["_domain"] == engine.domain_names[ids[i]]
    for d in range(len(DOMAINS)):
        rows = engine.domain_rows(d)
        assert np.all(ids[rows] == d) and len(rows) == engine.domain_sizes[d]
    assert np.sort(np.concatenate([engine.domain_rows(d) for d in range(5)])).tolist() == list(
        range(len(engine))
    )


def test_every_indexing_form(engine: DataEngine) -> None:
    n = len(engine)
    first, last = engine[0], engine[n - 1]
    assert engine[np.int64(0)] == first and engine[np.int32(0)] == first
    assert engine[-1] == last and engine[-n] == first
    assert engine[[0, -1]] == [first, last]
    assert engine[(0, n - 1)] == [first, last]
    assert engine[np.array([0, n - 1])] == [first, last]
    assert engine[0:3] == [engine[0], engine[1], engine[2]]
    assert engine[n - 2 :] == [engine[n - 2], last]
    assert engine[::5000] == [first, engine[5000]]
    assert engine[[]] == [] and engine[5:5] == []
    import torch

    assert engine[torch.tensor(3)] == engine[3] and engine[torch.tensor([3, -1])] == [engine[3], last]
    for bad in (n, -n - 1, [0, n], np.array([n + 7])):
        with pytest.raises(IndexError):
            engine[bad]
    for bad in ("0", 1.5, True, [0.5], np.zeros((2, 2), dtype=int)):
        with pytest.raises(TypeError):
            engine[bad]


def test_iteration_matches_indexing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}"} for i in range(5)])
    e = DataEngine(DataArguments(dataset=str(tmp_path / "d.jsonl")))
    assert [text_of(s) for s in e] == [f"t{i}" for i in range(5)]
    assert e.num_samples == 5


def test_eval_engine_same_domains(engine: DataEngine) -> None:
    ev = DataEngine(DataArguments(), split="eval")
    assert ev.domain_names == engine.domain_names
    assert len(ev) == 1000 and ev.domain_sizes.tolist() == [200] * 5
    assert ev[0]["_domain"] == "greet"


def test_eval_leaves_out_datasets_without_eval(two_domain_info: Path) -> None:
    tr = DataEngine(DataArguments(dataset=str(two_domain_info)))
    ev = DataEngine(DataArguments(dataset=str(two_domain_info)), split="eval")
    assert tr.has_eval and list(ev.dataset_infos) == ["ds_a"]
    assert ev.domain_names == tr.domain_names == ["alpha", "beta"]
    assert ev.domain_sizes.tolist() == [3, 0]
    assert text_of(ev[0], 0) == "ae0\nin0"


def test_eval_engine_without_eval_raises(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    args = DataArguments(dataset=str(tmp_path / "d.jsonl"))
    assert not DataEngine(args).has_eval
    with pytest.raises(ValueError, match="declares an `eval` entry"):
        DataEngine(args, split="eval")
    with pytest.raises(ValueError, match="split must be one of"):
        DataEngine(args, split="test")


def test_from_config_and_hydra_instantiate(two_domain_info: Path) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    e = DataEngine.from_config(dataset=str(two_domain_info), seed=3)
    assert isinstance(e, DataEngine) and e.args.seed == 3 and len(e) == 14
    cfg = OmegaConf.create(
        {
            "_target_": "dataflex.data.DataEngine.from_config",
            "dataset": str(two_domain_info),
            "cutoff_len": 64,
            "split": "eval",
        }
    )
    ev = instantiate(cfg)
    assert ev.split == "eval" and len(ev) == 3


def test_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_domain_info: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # info-file paths resolve against the info file, not the cwd
    assert len(DataEngine(DataArguments(dataset=str(two_domain_info)))) == 14
    monkeypatch.chdir(tmp_path)  # a bare data path resolves against the cwd
    assert len(DataEngine(DataArguments(dataset=os.path.join("b", "train.jsonl")))) == 4


def test_max_samples(two_domain_info: Path) -> None:
    e = DataEngine(DataArguments(dataset=str(two_domain_info), max_samples=3))
    assert e.domain_sizes.tolist() == [3, 3]
    assert [text_of(s, 0).split("\n")[0] for s in e] == ["a0", "a1", "a2", "b0", "b1", "b2"]
