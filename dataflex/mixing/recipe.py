"""A static recipe: the exact trained sample ids of a run, step by step, with their ledger weights, and the
identity of the data they index. `dataflex-export <run dir>` writes it (`trained_ids.json`); `trainer=static
trainer.replay=<it, or the run dir>` trains exactly these ids in this order (`dataflex.train.trainer.static`).

    {"format": "dataflex-trained-ids/1",
     "steps": [1, 2, ...],                    # optimizer steps, 1-based, contiguous
     "sample_ids": [[...], ...],              # the global batch of every step, in the loop's slot order
     "weights": [null | [...], ...],          # N x w_i per slot (the ledger's convention); null: plain mean
     "skipped": [false, ...],                 # the run dropped that step's update (nan_policy=skip_step)
     "data": {"fingerprint": "...", "num_items": N, "domain_names": [...]} | null,
     "source": {...}}                         # where it came from (free-form)

`data.fingerprint` (`data_fingerprint`) hashes the training index of the DataEngine (datasets, rows, domains
of every id) and the raw content of 64 evenly spaced items: no tokenizer, template or cutoff in it, so the
recipe applies to another model (the transfer use) but not to other data. Checked before any model loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "dataflex-trained-ids/1"
DATA_JSON = "data.json"
"""The run's data identity, written next to its ledger (`<run dir>/ledger/data.json`) by the loop."""
CONTENT_SAMPLES = 64
"""Items whose raw content enters the fingerprint (evenly spaced over the index)."""


class RecipeError(ValueError):
    """A recipe that cannot be replayed on this data; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class TrainedIds:
    steps: list[int]
    sample_ids: list[np.ndarray]
    weights: list[np.ndarray | None]
    """N x w_i per slot (float32 values, as the ledger stores them); None: the step's plain mean loss."""
    skipped: list[bool]
    data: dict[str, Any] | None
    source: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def batch_size(self) -> int:
        return len(self.sample_ids[0])

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "steps": self.steps,
            "sample_ids": [ids.tolist() for ids in self.sample_ids],
            "weights": [None if w is None else w.tolist() for w in self.weights],
            "skipped": self.skipped,
            "data": self.data,
            "source": self.source,
        }


# ---------------------------------------------------------------------------------------- data identity
def data_fingerprint(engine: Any) -> dict[str, Any] | None:
    """The identity of a DataEngine's training items (None for a streaming engine: no ids to replay)."""
    index = getattr(engine, "data_index", None)
    if index is None:
        return None
    h = hashlib.sha256()
    h.update(json.dumps([list(index.dataset_names), list(index.domain_names)]).encode())
    for arr in (index.dataset_ids, index.row_ids, index.domain_ids):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    n = len(index)
    for i in np.unique(np.linspace(0, n - 1, num=min(n, CONTENT_SAMPLES)).astype(np.int64)):
        h.update(json.dumps(engine[int(i)], sort_keys=True, default=str).encode())
    return {"fingerprint": h.hexdigest()[:32], "num_items": n, "domain_names": list(index.domain_names)}


def write_data_identity(run_dir: str | Path, engine: Any) -> None:
    """`<run dir>/ledger/data.json`: what `dataflex-export` copies into the recipe."""
    identity = data_fingerprint(engine)
    if identity is None:
        return
    folder = Path(run_dir) / "ledger"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DATA_JSON).write_text(json.dumps(identity))


def read_data_identity(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "ledger" / DATA_JSON
    return json.loads(path.read_text()) if path.is_file() else None


# --------------------------------------------------------------------------------------------- loading
def _fail(where: str, message: str) -> RecipeError:
    return RecipeError(f"trainer.replay={where}: {message}")


def load_recipe(path: str | Path) -> TrainedIds:
    """A recipe file (`dataflex-export`'s trained_ids JSON) or a run dir (read from its ledger)."""
    where = str(path)
    p = Path(path)
    if p.is_dir():
        from .export import export_trained_ids

        content = export_trained_ids(p)
        if content is None:
            raise _fail(
                where, "the folder has no data ledger (ledger/*.parquet); give a run dir or a recipe."
            )
    elif p.is_file():
        try:
            content = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _fail(
                where, f"not a JSON recipe ({err}); write one with `dataflex-export <run dir>`."
            ) from None
    else:
        raise _fail(where, "no such file or run dir; write a recipe with `dataflex-export <run dir>`.")
    return parse_recipe(content, where)


def parse_recipe(content: Any, where: str = "<recipe>") -> TrainedIds:
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        got = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise _fail(where, f"format {got!r} is not {FORMAT!r}; write it with `dataflex-export <run dir>`.")
    if not content.get("replayable", True):
        raise _fail(where, f"the run cannot be replayed by ids: {content.get('not_replayable_because')}")
    try:
        steps = [int(s) for s in content["steps"]]
        ids = [np.asarray(x, dtype=np.int64) for x in content["sample_ids"]]
        raw_weights: Sequence[Any] = content.get("weights") or [None] * len(steps)
        skipped = [bool(s) for s in content.get("skipped") or [False] * len(steps)]
    except (KeyError, TypeError, ValueError) as err:
        raise _fail(where, f"malformed recipe ({type(err).__name__}: {err}).") from None
    if not steps:
        raise _fail(where, "no steps.")
    if steps != list(range(1, len(steps) + 1)):
        first_gap = next(k for k, s in enumerate(steps, 1) if s != k)
        raise _fail(
            where, f"steps must be 1, 2, ... without gaps; entry {first_gap} is step {steps[first_gap - 1]}."
        )
    if not (len(ids) == len(raw_weights) == len(skipped) == len(steps)):
        raise _fail(where, "sample_ids, weights and skipped must have one entry per step.")
    size = len(ids[0])
    weights: list[np.ndarray | None] = []
    for step, (batch, w) in enumerate(zip(ids, raw_weights), 1):
        if batch.ndim != 1 or len(batch) != size or size == 0:
            raise _fail(
                where, f"step {step} has {batch.size} ids, step 1 has {size}: every step must have the same."
            )
        if (batch < 0).any():
            raise _fail(where, f"step {step} has negative sample ids {batch[batch < 0][:5].tolist()}.")
        if w is not None:
            w = np.asarray(w, dtype=np.float32)
            if w.shape != batch.shape or not np.isfinite(w).all():
                raise _fail(where, f"step {step}: weights must be {size} finite numbers, one per id.")
        weights.append(w)
    data = content.get("data")
    return TrainedIds(steps, ids, weights, skipped, data, dict(content.get("source") or {}), where)


def check_recipe_data(recipe: TrainedIds, identity: dict[str, Any] | None, num_items: int) -> None:
    """The recipe's ids index this data: same fingerprint (when both are known) and every id in range."""
    where = recipe.path
    if recipe.data is not None and identity is not None:
        if recipe.data.get("domain_names") != identity["domain_names"]:
            raise _fail(
                where,
                f"recorded on domains {recipe.data.get('domain_names')}, this data has "
                f"{identity['domain_names']}: replay it on the data the run trained on (same data.* keys).",
            )
        if recipe.data.get("fingerprint") != identity["fingerprint"]:
            raise _fail(
                where,
                f"data fingerprint {recipe.data.get('fingerprint')} (the run's data) != "
                f"{identity['fingerprint']} (this data): the ids would name other samples. Use the run's "
                "data.dataset / data.max_samples / data.seed / data.val_size.",
            )
    top = max(int(ids.max()) for ids in recipe.sample_ids)
    if top >= num_items:
        step = next(k for k, ids in enumerate(recipe.sample_ids, 1) if int(ids.max()) == top)
        raise _fail(
            where,
            f"step {step} trains sample id {top}, but the training data has {num_items} items (ids 0.."
            f"{num_items - 1}): the recipe was made on larger data; use the run's data.* settings.",
        )


# --------------------------------------------------------------------------------------------- sampler
class ReplaySampler:
    """Hands out the recipe's global batches in order (the static trainer's sampler under replay)."""

    epoch = 0

    def __init__(self, recipe: TrainedIds) -> None:
        self.recipe = recipe
        self.position = 0

    def next(self, n: int) -> np.ndarray:
        if self.position >= len(self.recipe.steps):
            raise RuntimeError(
                f"trainer.replay: all {len(self.recipe.steps)} steps of the recipe are trained."
            )
        ids = self.recipe.sample_ids[self.position]
        if len(ids) != n:
            raise RuntimeError(f"trainer.replay: the loop asks {n} ids per step, the recipe has {len(ids)}.")
        self.position += 1
        return ids.copy()

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
