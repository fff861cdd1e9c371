"""Helpers for the data-layer tests (imported as `data_helpers`; pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def alpaca_rows(n: int, tag: str = "q") -> list[dict[str, Any]]:
    return [
        {"instruction": f"{tag}{i}", "input": "" if i % 2 else f"in{i}", "output": f"{tag}-out{i}"}
        for i in range(n)
    ]


def text_of(sample: dict[str, Any], turn: int = -1) -> str:
    return sample["messages"][turn]["content"][0]["value"]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and mtime: proves nothing was written there."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def make_two_domain_info(folder: Path) -> Path:
    """A dataset_info.yaml with two alpaca datasets (10 and 4 rows, domains alpha/beta); only the first
    has an eval file (3 rows)."""
    write_jsonl(folder / "a" / "train.jsonl", alpaca_rows(10, "a"))
    write_jsonl(folder / "a" / "eval.jsonl", alpaca_rows(3, "ae"))
    write_jsonl(folder / "b" / "train.jsonl", alpaca_rows(4, "b"))
    info = folder / "dataset_info.yaml"
    info.write_text(
        "ds_a:\n  path: a/train.jsonl\n  eval: a/eval.jsonl\n  converter: alpaca\n  domain: alpha\n"
        "ds_b:\n  path: b/train.jsonl\n  converter: alpaca\n  domain: beta\n"
    )
    return info
