"""Precomputed per-sample scores, aligned with the training items: a numeric field of the rows
(`score_field`) or a file with one score per item in the data's order (`score_path`). One loader for every
consumer (trainer=dynamic_reorder's static order, component=precomputed under dynamic_select and
dynamic_weight); it fails naming the key, the file and the row, and the trainers call it on the data engine
before any model loads (`BaseTrainer.check_data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SCORE_KEYS = ("score_field", "score_path")
"""Config keys that name precomputed scores (in `trainer` or in `component`)."""


def read_score_file(path: str, n: int, key: str) -> np.ndarray:
    """(n,) float64 scores from a .npy array or a text file with one number per line; `key` is the config
    key that named the file (e.g. `trainer.score_path`), used in the errors."""
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{key}={path}: no such file (relative paths start at the cwd).")
    try:
        raw = np.load(file) if file.suffix == ".npy" else np.loadtxt(file, dtype=np.float64, ndmin=1)
        scores = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (ValueError, OSError) as err:
        raise ValueError(
            f"{key}={path} is not a .npy array or a text file of numbers (one per line): {err}"
        ) from None
    if len(scores) != n:
        raise ValueError(
            f"{key}={path} holds {len(scores)} scores but the training data has {n} items; the file must "
            "have one score per training row, in the data's order."
        )
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ValueError(
            f"{key}={path}: row {int(bad[0])} (0-based item id) is {scores[bad[0]]}"
            + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else "")
            + "; every training item needs a finite score."
        )
    return scores


def field_scores(engine: Any, field: str, key: str) -> np.ndarray:
    """(n,) float64 scores from the numeric field `field` of every training row (DataEngine.field_values
    names a missing or non-numeric value's row); NaN and inf are refused here, naming the row."""
    scores = engine.field_values(field)
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{key}={field}: training item {i} ({engine.where(i)}) has {field}={scores[i]}"
            + (f" (and {len(bad) - 1} more items)" if len(bad) > 1 else "")
            + "; every training row needs a finite score."
        )
    return scores


def precomputed_scores(
    engine: Any, *, field: str | None, path: str | None, prefix: str, nonnegative: bool = False
) -> np.ndarray:
    """The scores a `score_field` / `score_path` pair names (exactly one is set) for the items of `engine`
    (a DataEngine, or TokenizedData whose `.engine` is one); `prefix` is `trainer` or `component`;
    `nonnegative`: a negative score is refused, naming its row (scores used as proportional weights)."""
    engine = getattr(engine, "engine", engine)
    if bool(field) == bool(path):
        raise ValueError(f"set exactly one of {prefix}.score_field and {prefix}.score_path.")
    key = f"{prefix}.score_field" if field else f"{prefix}.score_path"
    if field:
        scores = field_scores(engine, field, key)
    else:
        scores = read_score_file(str(path), len(engine), key)
    negative = np.flatnonzero(scores < 0)
    if nonnegative and len(negative):
        i = int(negative[0])
        raise ValueError(
            f"{key}={field or path}: training item {i} has score {scores[i]} < 0"
            + (f" (and {len(negative) - 1} more)" if len(negative) > 1 else "")
            + f"; {prefix}.mapping=proportional needs scores >= 0 (use mapping=softmax for signed scores)."
        )
    return scores


def check_precomputed(node: Any, engine: Any, prefix: str) -> None:
    """Loads and checks the scores a config node names (`score_field` / `score_path`), if it names any."""
    if node is None or not hasattr(node, "get"):
        return
    field, path = node.get("score_field"), node.get("score_path")
    if field or path:
        nonnegative = node.get("mapping") == "proportional"
        precomputed_scores(engine, field=field, path=path, prefix=prefix, nonnegative=nonnegative)
