"""The leaderboard's second corpus (experiments/mixing/leaderboard/late_corpus.py): deterministic, unequal
domain sizes, and a `late` domain that composes `lookup`'s dictionary with a reversal."""

from __future__ import annotations

import importlib.util
import json

from dataflex.data import DataArguments, DataEngine

from helpers import REPO


def _module():
    path = REPO / "experiments" / "mixing" / "leaderboard" / "late_corpus.py"
    spec = importlib.util.spec_from_file_location("late_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_late_corpus_is_deterministic_and_compositional(tmp_path):
    late = _module()
    info = late.write_corpus(tmp_path / "a")
    late.write_corpus(tmp_path / "b")
    for domain in late.SIZES:
        for split in ("train", "eval"):
            a, b = tmp_path / "a" / domain / f"{split}.jsonl", tmp_path / "b" / domain / f"{split}.jsonl"
            assert a.read_bytes() == b.read_bytes()
    lookup = {r["input"]: r["output"] for r in _rows(tmp_path / "a" / "lookup" / "train.jsonl")}
    for r in _rows(tmp_path / "a" / "late" / "train.jsonl")[:50]:
        words = r["input"].split()
        known = [w for w in reversed(words) if w in lookup]
        assert len(known) == len(words) and r["output"] == " ".join(lookup[w] for w in known)
    engine = DataEngine(DataArguments(dataset=str(info)))
    assert dict(zip(engine.domain_names, engine.domain_sizes.tolist())) == late.SIZES
