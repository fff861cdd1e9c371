"""Streaming: lazy reading, documented order, sharding by reader, proportional mixing, resumption."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from data_helpers import alpaca_rows, write_jsonl

from dataflex.data import DataArguments, DataEngine, DataError
from dataflex.data.plugins.loader import LoadContext
from dataflex.data.streaming import LineStream


def values(samples) -> list[str]:
    return [s["messages"][-1]["content"][0]["value"] for s in samples]


def _text_file(path: Path, prefix: str, n: int, blank_every: int = 0, trailing_newline: bool = True) -> Path:
    lines = []
    for i in range(n):
        lines.append(json.dumps({"text": f"{prefix}{i}" + "x" * (i % 5)}))
        if blank_every and i % blank_every == 0:
            lines.append("")
    path.write_text("\n".join(lines) + ("\n" if trailing_newline else ""))
    return path


@pytest.fixture
def two_streams(tmp_path: Path) -> Path:
    _text_file(tmp_path / "a.jsonl", "a", 7)
    _text_file(tmp_path / "b.jsonl", "b", 3)
    (tmp_path / "dataset_info.yaml").write_text(
        "a: {path: a.jsonl, streaming: true, weight: 2}\nb: {path: b.jsonl, streaming: true, weight: 1}\n"
    )
    return tmp_path / "dataset_info.yaml"


def test_streaming_engine_has_no_length(two_streams: Path) -> None:
    e = DataEngine(DataArguments(dataset=str(two_streams)))
    assert e.streaming and e.num_samples == -1 and e.data_index is None
    with pytest.raises(TypeError, match="streaming DataEngine has no length"):
        len(e)
    with pytest.raises(TypeError, match="cannot be indexed"):
        e[0]
    with pytest.raises(TypeError, match="no index"):
        e.domain_ids  # noqa: B018
    assert e.datasets == {"a": None, "b": None}  # nothing loaded up front


def test_documented_order_single_reader(two_streams: Path) -> None:
    """Weights 2:1 -> slots a a b a a b a a b, rows in file order; when b is exhausted a continues alone."""
    e = DataEngine(DataArguments(dataset=str(two_streams)))
    assert values(e) == ["a0", "a1x", "b0", "a2xx", "a3xxx", "b1x", "a4xxxx", "a5", "b2xx", "a6x"]


@pytest.mark.parametrize("readers", [1, 2, 3, 5])
def test_shards_partition_the_file(tmp_path: Path, readers: int) -> None:
    _text_file(tmp_path / "t.jsonl", "r", 23, blank_every=4, trailing_newline=False)
    ctx = LoadContext("t")
    shards = [
        [r["text"] for r in LineStream(tmp_path / "t.jsonl", k, readers, ctx, json.loads)]
        for k in range(readers)
    ]
    flat = [x for s in shards for x in s]
    assert flat == [json.loads(ln)["text"] for ln in (tmp_path / "t.jsonl").read_text().splitlines() if ln]
    assert all(shards)  # every reader gets a contiguous, non-empty part


def test_engine_sharding_by_reader(two_streams: Path) -> None:
    e = DataEngine(DataArguments(dataset=str(two_streams)))
    everything = values(e)
    got = [values(e.stream(r, 3)) for r in range(3)]
    assert sorted(x for g in got for x in g) == sorted(everything)


def test_resume_without_rereading(two_streams: Path, tmp_path: Path) -> None:
    e = DataEngine(DataArguments(dataset=str(two_streams)))
    it = e.stream()
    head = values([next(it) for _ in range(5)])
    state = json.loads(json.dumps(it.state_dict()))  # a state survives a JSON checkpoint
    tail = values(it)
    # overwrite everything already read with garbage of the same length: a resumed reader that seeks to
    # its saved offsets never sees it
    for name in ("a", "b"):
        offset = state["mix"]["streams"][0 if name == "a" else 1]["offset"]
        raw = (tmp_path / f"{name}.jsonl").read_bytes()
        (tmp_path / f"{name}.jsonl").write_bytes(b"#" * offset + raw[offset:])
    assert values(e.stream(state=state)) == tail
    assert head + tail == ["a0", "a1x", "b0", "a2xx", "a3xxx", "b1x", "a4xxxx", "a5", "b2xx", "a6x"]
    e.load_state_dict(state)  # the engine-level hook used by __iter__ (and StatefulDataLoader)
    assert values(e) == tail
    with pytest.raises(ValueError, match="same world size"):
        e.stream(1, 2, state=state)


def test_lazy_reading_stops_before_unread_lines(tmp_path: Path) -> None:
    path = _text_file(tmp_path / "big.jsonl", "z", 50)
    with open(path, "a") as f:
        f.write("{this is not json\n")
    e = DataEngine(DataArguments(dataset=str(path), streaming=True))
    it = iter(e)
    assert values([next(it) for _ in range(50)])[:2] == ["z0", "z1x"]
    with pytest.raises(DataError, match=r"big.jsonl line 51: malformed JSON"):
        next(it)


def test_error_line_numbers_in_later_shards(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"t{i}"}) for i in range(40)]
    lines[33] = "{broken"
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    e = DataEngine(DataArguments(dataset=str(tmp_path / "d.jsonl"), streaming=True))
    with pytest.raises(DataError, match=r"d.jsonl line 34"):
        list(e.stream(3, 4))
    skip = DataEngine(DataArguments(dataset=str(tmp_path / "d.jsonl"), streaming=True, on_error="skip"))
    assert len(values(skip)) == 39 and "line 34" in skip.skipped["d"][0][0]


def test_streaming_mixes_memory_and_datasets_streams(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("text\n" + "".join(f"c{i}\n" for i in range(5)))
    write_jsonl(tmp_path / "m.jsonl", [{"text": f"m{i}"} for i in range(3)])
    (tmp_path / "i.yaml").write_text(
        "c: {path: c.csv, streaming: true, converter: text}\nm: {path: m.jsonl, converter: text}\n"
    )
    e = DataEngine(DataArguments(dataset=str(tmp_path / "i.yaml")))
    assert e.streaming and e.datasets["m"] is not None  # the non-streaming one is in memory
    assert values(e) == ["c0", "m0", "c1", "m1", "c2", "m2", "c3", "c4"]
    it = e.stream()
    [next(it) for _ in range(3)]
    assert values(e.stream(state=it.state_dict())) == ["m1", "c2", "m2", "c3", "c4"]
    shards = [values(e.stream(r, 2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(values(e))


def test_hub_streaming_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_list([{"text": f"h{i}"} for i in range(6)]).to_iterable_dataset(
            num_shards=2
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    e = DataEngine(DataArguments(dataset="org/web", streaming=True))
    assert calls[0] == ("org/web", {"split": "train", "streaming": True})
    assert values(e) == [f"h{i}" for i in range(6)]
    assert sorted(values(e.stream(0, 2)) + values(e.stream(1, 2))) == [f"h{i}" for i in range(6)]


def test_embedded_default_streams_round_robin() -> None:
    e = DataEngine(DataArguments(streaming=True, max_samples=4))
    samples = list(e)
    assert [s["_domain"] for s in samples[:5]] == e.domain_names
    assert (
        len(samples) == 20
        and np.unique([s["_domain"] for s in samples], return_counts=True)[1].tolist() == [4] * 5
    )
    assert [s["_domain"] for s in e.stream(1, 2)].count("greet") == 2  # max_samples split over readers


def test_async_iteration_matches(two_streams: Path) -> None:
    e = DataEngine(DataArguments(dataset=str(two_streams)))

    async def collect() -> list:
        return [s async for s in e]

    assert values(asyncio.run(collect())) == values(e)
    m = DataEngine(DataArguments(dataset=str(two_streams), streaming=False))
    assert len(asyncio.run(_collect(m))) == 10


async def _collect(e: DataEngine) -> list:
    return [s async for s in e]


def test_dataloader_workers_each_read_their_shard(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    write_jsonl(tmp_path / "d.jsonl", alpaca_rows(40))
    e = DataEngine(DataArguments(dataset=str(tmp_path / "d.jsonl"), streaming=True))
    loader = DataLoader(e.as_iterable_dataset(), batch_size=4, num_workers=2, collate_fn=list)
    got = [s["messages"][-1]["content"][0]["value"] for batch in loader for s in batch]
    assert sorted(got) == sorted(f"q-out{i}" for i in range(40))
