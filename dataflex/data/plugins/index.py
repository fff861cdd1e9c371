"""`DataIndexPlugin`: which rows of each dataset make up an epoch, as numpy arrays.

The index is three aligned arrays (dataset id, row id, domain id) rather than the spec's list of
``(dataset_name, row)`` tuples: 10M entries cost ~200 MB as arrays and ~1 GB as tuples, and numpy builds
them without a Python loop per row.

Default plugin ``size_weight``: a dataset of ``L`` rows contributes ``n`` rows per epoch, where ``n`` is
``size`` (default ``L``) multiplied by ``weight`` (default 1) and rounded to the nearest integer. The rows
are a window of the dataset's *without-replacement stream*: passes over the dataset, each a permutation
seeded by ``(seed, dataset, pass)``. Epoch ``e`` takes stream positions ``[e*n, (e+1)*n)``: so within and
across epochs every row appears before any row repeats, ``n`` is exact, and a ``size`` smaller than the
dataset walks through all of it over several epochs. (LLaMA-Factory v1 draws with replacement, even when
shrinking, so some rows repeat while others are never seen.) A dataset with neither ``size`` nor
``weight`` contributes its rows once, in order; the samplers shuffle.

A plugin is a function ``fn(length, size, weight, seed, key, epoch) -> np.ndarray[int64]`` of row ids;
register one with `register_index_plugin` and select it with ``index: NAME`` in dataset_info.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..errors import DataError

IndexPlugin = Callable[[int, "int | None", "float | None", int, int, int], np.ndarray]
_PLUGINS: dict[str, IndexPlugin] = {}
_Plugin = TypeVar("_Plugin", bound=IndexPlugin)  # the decorated function keeps its own signature


def register_index_plugin(name: str) -> Callable[[_Plugin], _Plugin]:
    def deco(fn: _Plugin) -> _Plugin:
        _PLUGINS[name] = fn
        return fn

    return deco


def get_index_plugin(name: str) -> IndexPlugin:
    try:
        return _PLUGINS[name]
    except KeyError:
        raise DataError(
            f"Unknown index plugin {name!r}. Registered: {sorted(_PLUGINS)}. Fix the `index` key "
            "in dataset_info or register yours with @dataflex.data.register_index_plugin."
        ) from None


def target_count(length: int, size: int | None, weight: float | None) -> int:
    """Rows per epoch: ``round((size if given else length) * (weight if given else 1))``."""
    if size is not None and size < 0:
        raise DataError(f"size must be >= 0, got {size}")
    if weight is not None and not weight >= 0:
        raise DataError(f"weight must be >= 0, got {weight}")
    n = length if size is None else size
    return int(round(n * weight)) if weight is not None else int(n)


def pass_permutation(length: int, seed: int, key: int, pass_no: int) -> np.ndarray:
    """Permutation of pass `pass_no` of dataset `key` (independent streams per (seed, key, pass))."""
    return np.random.default_rng([seed, key, pass_no]).permutation(length)


def stream_window(
    length: int, start: int, count: int, seed: int, key: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Positions ``[start, start+count)`` of the without-replacement stream of a `length`-row dataset."""
    if out is None:
        out = np.empty(count, dtype=np.int64)
    filled, pos = 0, start
    while filled < count:
        pass_no, offset = divmod(pos, length)
        take = min(length - offset, count - filled)
        perm = pass_permutation(length, seed, key, pass_no)
        out[filled : filled + take] = perm[offset : offset + take]
        filled += take
        pos += take
    return out


@register_index_plugin("size_weight")
def size_weight_index(
    length: int,
    size: int | None,
    weight: float | None,
    seed: int,
    key: int,
    epoch: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Row ids of one dataset for `epoch` (see the module docstring)."""
    n = target_count(length, size, weight)
    if n and not length:
        raise DataError("cannot draw rows from an empty dataset")
    if size is None and weight is None:
        rows = np.arange(length, dtype=np.int64)
        if out is not None:
            out[:] = rows
            return out
        return rows
    return stream_window(length, epoch * n, n, seed, key, out)


@dataclass
class DataIndex:
    """The engine's index: entry ``i`` is row ``row_ids[i]`` of dataset ``dataset_ids[i]``, in domain
    ``domain_ids[i]``. Entries are grouped by dataset, datasets in dataset_info order."""

    dataset_ids: np.ndarray  # int32
    row_ids: np.ndarray  # int64
    domain_ids: np.ndarray  # int64
    dataset_names: list[str]
    domain_names: list[str]

    def __len__(self) -> int:
        return len(self.row_ids)

    def __getitem__(self, i: int) -> tuple[str, int]:
        """Entry `i` in the spec's ``(dataset_name, row)`` form."""
        return self.dataset_names[int(self.dataset_ids[i])], int(self.row_ids[i])


def build_index(
    lengths: Sequence[int],
    sizes: Sequence[int | None],
    weights: Sequence[float | None],
    dataset_domains: Sequence[int],
    dataset_names: list[str],
    domain_names: list[str],
    seed: int,
    epoch: int = 0,
    plugins: Sequence[str] | None = None,
) -> DataIndex:
    """Build the index for `epoch`; the output arrays are allocated once and filled in place, so peak
    memory stays close to the final ~20 bytes per entry."""
    counts = [target_count(L, s, w) for L, s, w in zip(lengths, sizes, weights)]
    total = int(sum(counts))
    dataset_ids = np.empty(total, dtype=np.int32)
    row_ids = np.empty(total, dtype=np.int64)
    domain_ids = np.empty(total, dtype=np.int64)
    start = 0
    for k, (L, s, w, n) in enumerate(zip(lengths, sizes, weights, counts)):
        plugin_name = plugins[k] if plugins is not None else "size_weight"
        sl = slice(start, start + n)
        if plugin_name == "size_weight":
            size_weight_index(L, s, w, seed, k, epoch, out=row_ids[sl])
        else:
            rows = np.asarray(get_index_plugin(plugin_name)(L, s, w, seed, k, epoch), dtype=np.int64)
            if len(rows) != n or (n and (rows.min() < 0 or rows.max() >= L)):
                raise DataError(
                    f"index plugin {plugin_name!r} returned {len(rows)} rows for dataset "
                    f"{dataset_names[k]!r}; expected {n} row ids in [0, {L})"
                )
            row_ids[sl] = rows
        dataset_ids[sl] = k
        domain_ids[sl] = dataset_domains[k]
        start += n
    return DataIndex(dataset_ids, row_ids, domain_ids, list(dataset_names), list(domain_names))
