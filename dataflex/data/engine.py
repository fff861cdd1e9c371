"""`DataEngine` (spec 003): loads the datasets described by `DataArguments`, indexes them, and serves
standard samples by index (map-style) or as a stream.

Construction runs the spec's three steps, `get_dataset_info()` → `load_dataset()` →
`build_data_index()`. The engine knows the *domain* of every sample (dataset_info ``domain``, default
the dataset's name), which the mixing/selection strategies and `dataflex.data.sampling` work with.

Deviations from the spec text, on purpose:

- `data_index` is a `DataIndex` of numpy arrays, not a list of tuples (``data_index[i]`` still gives
  the ``(dataset_name, row)`` tuple).
- `len()` of a streaming engine raises `TypeError` (``-1`` is not a legal ``__len__``); `num_samples`
  returns ``-1`` instead. A streaming engine has no index: it is consumed with `iter()`/`async for`.
- Rows of non-streaming datasets are all converted once at load time, so a bad row fails the run at
  start-up (naming dataset, file, line and field) instead of hours into training; with
  ``on_error=skip`` bad rows are dropped from the index and reported.
- A dataset without ``converter`` has its format detected from its first row (standard messages,
  OpenAI, ShareGPT, alpaca, pair, text); the choice is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, IterableDataset

from .arguments import DataArguments
from .dataset_info import DatasetInfo, resolve_dataset_arg
from .errors import DataError, MissingFieldError, RowFormatError
from .plugins.converter import get_converter
from .plugins.index import DataIndex, build_index
from .plugins.loader import (
    HFRows,
    LoadContext,
    RowTable,
    SubsetRows,
    data_files_in,
    first_row,
    load_hub,
    load_rows,
    loader_for,
)
from .streaming import HFStream, MemoryStream, MixedStream

logger = logging.getLogger(__name__)
Sample = dict[str, Any]
SPLITS = ("train", "eval")


def detect_converter(row: Mapping[str, Any] | None) -> str:
    """The converter for rows shaped like `row` (used when dataset_info names none)."""
    if row is not None:
        keys = set(row)
        if "chosen_messages" in keys:
            return "standard"
        if "messages" in keys:
            msgs = row["messages"]
            first = msgs[0] if isinstance(msgs, list) and msgs else None
            content = first.get("content") if isinstance(first, Mapping) else None
            if (
                isinstance(content, list)
                and content
                and isinstance(content[0], Mapping)
                and "value" in content[0]
            ):
                return "standard"
            return "openai"
        if "conversations" in keys:
            return "sharegpt"
        if {"chosen", "rejected"} <= keys:
            return "alpaca" if "instruction" in keys else "pair"
        if {"instruction", "output"} <= keys:
            return "alpaca"
        if "text" in keys:
            return "text"
    raise DataError(
        f"cannot detect the format of rows with keys {sorted(row) if row is not None else '(none)'}; "
        "set `converter` in a dataset_info.yaml (alpaca, sharegpt, openai, pair, text or yours)"
    )


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class DataEngine(Dataset):
    """Loads, indexes and serves the datasets of `data_args`.

    attr:
        args: the `DataArguments`.
        split: ``"train"`` or ``"eval"`` (each dataset's ``eval`` file/split; datasets without one are
            left out).
        datasets: dataset name → row table (non-streaming) or `None` (streaming: opened lazily per reader).
        dataset_infos: dataset name → `DatasetInfo` of the datasets served by this engine.
        data_index: the `DataIndex` (None for a streaming engine).
        streaming: True when any dataset streams (the whole engine then streams).
        skipped: dataset name → ``[(where, reason), ...]`` rows dropped by ``on_error=skip``.
    """

    def __init__(self, data_args: DataArguments | None = None, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"DataEngine split must be one of {SPLITS}, got {split!r}")
        self.args = data_args if data_args is not None else DataArguments()
        self.split = split
        self.datasets: dict[str, RowTable | None] = {}
        self.dataset_infos: dict[str, DatasetInfo] = {}
        self.data_index: DataIndex | None = None
        self.streaming = False
        self.skipped: dict[str, list[tuple[str, str]]] = {}
        self.epoch = 0
        self._stream_state: dict[str, Any] | None = None
        self._last_stream: _EngineStream | None = None
        self._domain_rows: dict[int, np.ndarray] = {}
        self.get_dataset_info()
        self.load_dataset()
        self.build_data_index()

    @classmethod
    def from_config(cls, split: str = "train", **fields: Any) -> DataEngine:
        """Build from flat `DataArguments` fields.

        Hydra: ``_target_: dataflex.data.DataEngine.from_config``."""
        return cls(DataArguments(**fields), split=split)

    # ------------------------------------------------------------------------------ the three steps
    def get_dataset_info(self) -> None:
        """Resolve `args.dataset` into `DatasetInfo` records (see `dataflex.data.dataset_info`)."""
        all_infos = resolve_dataset_arg(self.args.dataset, self.args.dataset_dir)
        if self.args.streaming:
            all_infos = {n: replace(i, streaming=True) for n, i in all_infos.items()}
        self._all_infos = all_infos
        self.domain_names: list[str] = list(dict.fromkeys(i.domain for i in all_infos.values()))
        without_eval = [n for n, i in all_infos.items() if i.eval is None]
        self.held_out: set[str] = set(without_eval) if self.args.val_size else set()
        """Datasets whose eval split is `val_size` of their own rows (and whose train split is the rest)."""
        if self.split == "train":
            self.dataset_infos = dict(all_infos)
            self._warn_missing_eval(without_eval)
        else:
            self.dataset_infos = {
                n: i.for_eval() if n not in self.held_out else i
                for n, i in all_infos.items()
                if i.eval is not None or n in self.held_out
            }
            if not self.dataset_infos:
                raise ValueError(
                    f"no dataset of data.dataset={self.args.dataset!r} declares an `eval` entry, so "
                    "there is no eval split. Add `eval: <file or split>` to the datasets in "
                    "dataset_info, set data.val_size (e.g. 0.1) to hold out a fraction, or turn "
                    "evaluation off."
                )

    def _warn_missing_eval(self, without_eval: list[str]) -> None:
        if not without_eval:
            return
        domains = sorted({self._all_infos[n].domain for n in without_eval})
        if self.args.val_size:
            logger.warning(
                "domain(s) %s have no eval split (datasets %s): holding out data.val_size=%g of their "
                "rows as eval",
                domains,
                without_eval,
                self.args.val_size,
            )
        else:
            logger.warning(
                "domain(s) %s have no eval split (datasets %s) and are not evaluated; add `eval:` to "
                "them or set data.val_size=0.1 to hold out a fraction of their rows",
                domains,
                without_eval,
            )

    def datasets_without_eval(self, domains: list[str]) -> list[str]:
        """Names of the datasets of these domains that declare no `eval` entry (for error messages)."""
        return [n for n, i in self._all_infos.items() if i.domain in domains and i.eval is None]

    @property
    def has_eval(self) -> bool:
        """Whether any dataset declares an ``eval`` file/split or `val_size` holds rows out (an eval engine
        can then be built)."""
        return bool(self.held_out) or any(i.eval is not None for i in self._all_infos.values())

    def _hold_out(self, name: str, table: RowTable) -> RowTable:
        """The train or eval part of a dataset split by `val_size` (the same seeded draw in both engines)."""
        n, size = len(table), self.args.val_size
        assert size is not None, "only datasets in `held_out` (data.val_size set) are split"
        n_val = int(size) if size >= 1 else max(1, round(size * n))
        if n_val >= n:
            raise DataError(
                f"data.val_size={size:g} holds out {n_val} of the {n} rows of dataset {name!r}, leaving "
                "none to train on; lower data.val_size or add an `eval:` file to that dataset."
            )
        rng = np.random.default_rng([self.args.seed, zlib.crc32(name.encode())])
        held = np.zeros(n, dtype=bool)
        held[rng.permutation(n)[:n_val]] = True
        return SubsetRows(table, np.flatnonzero(held if self.split == "eval" else ~held))

    def load_dataset(self) -> None:
        """Load every dataset: in memory (and validated) unless it streams; streaming datasets are only
        opened when iterated, by each reader for its own shard."""
        self.streaming = any(i.streaming for i in self.dataset_infos.values())
        for name, info in self.dataset_infos.items():
            ctx = LoadContext(name, self.args.on_error)
            if info.streaming:
                if name in self.held_out:
                    raise DataError(
                        f"dataset {name!r} streams, so data.val_size cannot hold rows out of it; give it "
                        "an `eval:` file or unset data.val_size."
                    )
                if info.size is not None:
                    raise DataError(
                        f"dataset {name!r} ({info.origin}): `size` needs the dataset's rows up front "
                        "and cannot be used with `streaming: true`; use `weight` for its share."
                    )
                self.datasets[name] = None
                if info.converter is None:
                    self.dataset_infos[name] = replace(
                        info, converter=self._detect_streaming_converter(info, ctx)
                    )
                continue
            table = load_rows(info, ctx)
            if self.args.max_samples is not None and len(table) > self.args.max_samples:
                table = SubsetRows(table, np.arange(self.args.max_samples))
            if name in self.held_out:
                table = self._hold_out(name, table)
            if len(table) == 0:
                skipped = " after skipping bad rows" if ctx.skipped else ""
                raise DataError(
                    f"dataset {name!r} ({info.origin}) is empty{skipped}: "
                    f"no rows in {info.path}. Fix the file or remove the dataset."
                )
            if info.converter is None:
                info = replace(info, converter=detect_converter(first_row(table)))
                logger.info("dataset %r: no `converter` given, detected %r", name, info.converter)
                self.dataset_infos[name] = info
            table = self._validate_rows(name, table, ctx)
            self.datasets[name] = table
            if ctx.skipped:
                self.skipped[name] = ctx.skipped
        self._report_skipped()

    def _validate_rows(self, name: str, table: RowTable, ctx: LoadContext) -> RowTable:
        """Convert every row once; bad rows raise (or are dropped with ``on_error=skip``)."""
        bad: list[int] = []
        blank: list[int] = []
        for i, row in enumerate(table):
            try:
                sample = self._convert_data_sample(row, name, where=lambda i=i: table.where(i))
            except DataError as e:
                if self.args.on_error != "skip":
                    raise
                bad.append(i)
                ctx.skipped.append((table.where(i), str(e)))
                continue
            if _is_blank(sample):
                blank.append(i)
        if blank:
            logger.warning(
                "dataset %r: %d sample(s) have only empty or whitespace text (they would train on the end "
                "token alone), e.g. %s",
                name,
                len(blank),
                "; ".join(table.where(i) for i in blank[:3]),
            )
        if not bad:
            return table
        keep = np.setdiff1d(np.arange(len(table)), np.asarray(bad))
        if len(keep) == 0:
            raise DataError(
                f"dataset {name!r}: every row is malformed ({len(bad)} skipped); first: {ctx.skipped[0]}"
            )
        return SubsetRows(table, keep)

    def _report_skipped(self) -> None:
        for name, items in self.skipped.items():
            logger.warning(
                "dataset %r: skipped %d malformed row(s) (data.on_error=skip), e.g. %s",
                name,
                len(items),
                "; ".join(f"{w}: {r}" for w, r in items[:3]),
            )

    def _rows(self, name: str) -> RowTable:
        """The in-memory rows of a dataset (every dataset of a non-streaming engine has them)."""
        table = self.datasets[name]
        if table is None:
            raise DataError(f"dataset {name!r} streams: it has no rows in memory")
        return table

    def build_data_index(self) -> None:
        """Build the numpy index of epoch `self.epoch` (none for a streaming engine)."""
        self._domain_rows = {}
        if self.streaming:
            self.data_index = None
            return
        names = list(self.dataset_infos)
        infos = [self.dataset_infos[n] for n in names]
        domain_of = {d: k for k, d in enumerate(self.domain_names)}
        self.data_index = build_index(
            lengths=[len(self._rows(n)) for n in names],
            sizes=[i.size for i in infos],
            weights=[i.weight for i in infos],
            dataset_domains=[domain_of[i.domain] for i in infos],
            dataset_names=names,
            domain_names=self.domain_names,
            seed=self.args.seed,
            epoch=self.epoch,
            plugins=[i.index for i in infos],
        )
        self._tables = [self._rows(n) for n in names]
        if len(self.data_index) == 0:
            raise DataError(
                f"data.dataset={self.args.dataset!r} gives an empty {self.split} index (sizes/weights "
                "of all datasets are 0)"
            )
        if self.split == "train":
            empty = [d for d, s in zip(self.domain_names, self.domain_sizes) if s == 0]
            if empty:
                raise DataError(
                    f"domain(s) {empty} have no samples (their datasets have size/weight 0); "
                    "give them rows or remove them from dataset_info"
                )

    def set_epoch(self, epoch: int) -> None:
        """Rebuild the index for `epoch`: datasets with `size`/`weight` then serve the next window of their
        without-replacement stream (see `dataflex.data.plugins.index`). Length and domains are unchanged."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            if not self.streaming:
                self.build_data_index()

    # ----------------------------------------------------------------------------------- samples
    def _convert_data_sample(
        self, raw_sample: Mapping[str, Any], dataset_name: str, where: Any = None
    ) -> Sample:
        """Standardise one raw row with its dataset's converter; adds ``_dataset_name`` and ``_domain``.
        `where` (a string or a callable giving one) locates the row for error messages."""
        info = self.dataset_infos[dataset_name]
        converter = info.converter or "standard"
        try:
            if not isinstance(raw_sample, Mapping):
                raise RowFormatError(f"a row must be an object, got {type(raw_sample).__name__}")
            sample = get_converter(converter)(raw_sample, **info.converter_options)
        except MissingFieldError as e:
            loc = where() if callable(where) else (where or "a row")
            raise DataError(
                f"dataset {dataset_name!r}: {loc}: {e}, needed by converter {converter!r}. Fix the "
                "row, map your column names with `columns` in dataset_info, or choose another "
                "`converter`."
            ) from None
        except RowFormatError as e:
            loc = where() if callable(where) else (where or "a row")
            raise DataError(
                f"dataset {dataset_name!r}: {loc}: {e} (converter {converter!r}). Fix the row or "
                "choose another `converter`."
            ) from None
        sample["_dataset_name"] = dataset_name
        sample["_domain"] = info.domain
        return sample

    def _get(self, i: int) -> Sample:
        assert self.data_index is not None
        k = int(self.data_index.dataset_ids[i])
        row = int(self.data_index.row_ids[i])
        table = self._tables[k]
        return self._convert_data_sample(
            table[row], self.data_index.dataset_names[k], where=lambda: table.where(row)
        )

    def __len__(self) -> int:
        if self.streaming:
            raise TypeError(
                "a streaming DataEngine has no length (its datasets are read lazily); iterate it, "
                "and use `num_samples` (-1 when streaming) to check"
            )
        assert self.data_index is not None
        return len(self.data_index)

    @property
    def num_samples(self) -> int:
        """Number of index entries, or -1 for a streaming engine (the spec's `len`)."""
        return -1 if self.streaming else len(self)

    def __getitem__(self, index: Any) -> Sample | list[Sample]:
        """`int` (also numpy integers, negative from the end), a list/tuple/array of ints, or a slice."""
        if self.streaming:
            raise TypeError("a streaming DataEngine cannot be indexed; iterate it instead")
        n = len(self)
        if isinstance(index, slice):
            return [self._get(i) for i in range(*index.indices(n))]
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for a DataEngine of {n} samples")
            return self._get(i % n)
        if isinstance(index, (list, tuple, np.ndarray)) or hasattr(index, "__array__"):
            arr = np.asarray(index)
            if arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer):  # a 0-d array or tensor: one sample
                return self[int(arr)]
            if arr.size == 0:
                return []
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(
                    f"DataEngine indices must be a 1-D sequence of ints, got {arr.dtype} "
                    f"with shape {arr.shape}"
                )
            bad = arr[(arr < -n) | (arr >= n)]
            if bad.size:
                raise IndexError(f"index {int(bad[0])} out of range for a DataEngine of {n} samples")
            return [self._get(int(i)) for i in arr % n]
        raise TypeError(
            f"DataEngine indices must be int, a sequence of ints or a slice, not {type(index).__name__}"
        )

    def field_values(self, name: str) -> np.ndarray:
        """Column `name` of every sample's raw row (as stored, before conversion) as float64, aligned with
        engine indices: precomputed per-sample scores (`score_field`) for ordering, selection and weights."""
        index = self._require_index()
        out = np.empty(len(index), dtype=np.float64)
        for i in range(len(index)):
            k, row = int(index.dataset_ids[i]), int(index.row_ids[i])
            table = self._tables[k]
            raw = table[row]
            value = raw.get(name) if isinstance(raw, Mapping) else None
            try:
                out[i] = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise DataError(
                    f"dataset {index.dataset_names[k]!r}: {table.where(row)} has "
                    f"{'no field ' + repr(name) if value is None else f'{name}={value!r}, not a number'}; "
                    "every training row needs a numeric score there (or pick another score source)."
                ) from None
        return out

    def where(self, i: int) -> str:
        """Where engine index `i` comes from, for error messages: its dataset and file row."""
        index = self._require_index()
        k, row = int(index.dataset_ids[i]), int(index.row_ids[i])
        return f"dataset {index.dataset_names[k]!r}: {self._tables[k].where(row)}"

    # ------------------------------------------------------------------------------------- domains
    def _require_index(self) -> DataIndex:
        if self.data_index is None:
            raise TypeError(
                "a streaming DataEngine has no index, hence no per-sample domains; its datasets are "
                "mixed by `weight` while streaming"
            )
        return self.data_index

    @property
    def domain_ids(self) -> np.ndarray:
        """Domain id (into `domain_names`) of every index entry, int64, aligned with engine indices."""
        return self._require_index().domain_ids

    def domain_rows(self, d: int) -> np.ndarray:
        """Engine indices of domain `d`."""
        if not 0 <= d < len(self.domain_names):
            raise IndexError(f"domain id {d} out of range; domains: {self.domain_names}")
        if d not in self._domain_rows:
            self._domain_rows[d] = np.flatnonzero(self.domain_ids == d)
        return self._domain_rows[d]

    @property
    def domain_sizes(self) -> np.ndarray:
        """Number of index entries per domain (int64, in `domain_names` order)."""
        return np.bincount(self.domain_ids, minlength=len(self.domain_names)).astype(np.int64)

    # ----------------------------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[Sample]:
        """Map-style: every sample in index order. Streaming: this reader's shard (rank and dataloader
        worker), mixed across datasets by weight, resuming from `load_state_dict` if one was given."""
        if not self.streaming:
            return (self._get(i) for i in range(len(self)))
        rank, world = _rank_world()
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.stream(rank * workers + worker, world * workers)

    def stream(
        self, reader: int = 0, num_readers: int = 1, state: dict[str, Any] | None = None
    ) -> _EngineStream:
        """Reader `reader` of `num_readers`'s stream of samples (see `dataflex.data.streaming`)."""
        if not 0 <= reader < num_readers:
            raise ValueError(f"reader {reader} out of range for {num_readers} readers")
        if state is None and self._stream_state is not None:
            state, self._stream_state = self._stream_state, None
        self._last_stream = _EngineStream(self, reader, num_readers, state)
        return self._last_stream

    async def __aiter__(self) -> AsyncIterator[Sample]:
        """Async iteration: samples are read in a worker thread in chunks of 64, so the event loop is not
        blocked by file reads or conversion."""
        it = iter(self)
        while True:
            chunk = await asyncio.to_thread(_take, it, 64)
            for sample in chunk:
                yield sample
            if len(chunk) < 64:
                return

    def state_dict(self) -> dict[str, Any]:
        """Streaming position of the most recent iterator of this engine (in this process / worker)."""
        if self._last_stream is None:
            return {"epoch": self.epoch} if not self.streaming else (self._stream_state or {})
        return self._last_stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The next iteration resumes from `state` (streaming), or the index moves to its epoch."""
        if not self.streaming:
            self.set_epoch(int(state.get("epoch", 0)))
            return
        self._stream_state, self._last_stream = dict(state), None

    def as_iterable_dataset(self) -> IterableDataset:
        """A `torch.utils.data.IterableDataset` view, for `DataLoader` (which needs one to stream)."""
        return _IterableView(self)

    # ----------------------------------------------------------------------------------- streaming
    def _open_stream(
        self, name: str, reader: int, num_readers: int, state: dict[str, Any] | None, ctx: LoadContext
    ) -> Any:
        info = self.dataset_infos[name]
        cap = None
        if self.args.max_samples is not None:  # split the cap over the readers
            cap = self.args.max_samples // num_readers + (reader < self.args.max_samples % num_readers)
        table = self.datasets[name]
        if table is not None:
            return MemoryStream(table, reader, num_readers, state, cap)
        if info.source == "local":
            path = Path(info.path)
            files = data_files_in(path, info.loader) if path.is_dir() and not _is_saved(path) else [path]
            if len(files) == 1 and not _is_saved(path):
                plugin = loader_for(files[0], info.loader)
                line_stream = plugin.stream(files[0], reader, num_readers, ctx, state)
                if line_stream is not None:
                    line_stream.max_rows = cap
                    return line_stream
            return HFStream(lambda: _hf_local_stream(info, files, ctx), reader, num_readers, state, cap)
        return HFStream(lambda: load_hub(info, ctx, streaming=True), reader, num_readers, state, cap)

    def _detect_streaming_converter(self, info: DatasetInfo, ctx: LoadContext) -> str:
        probe = self._open_stream(info.name, 0, 1, None, ctx)
        row = next(iter(probe), None)
        if row is None:
            raise DataError(f"dataset {info.name!r} ({info.origin}) is empty: no rows in {info.path}")
        converter = detect_converter(row)
        logger.info("dataset %r: no `converter` given, detected %r", info.name, converter)
        return converter


def _is_blank(sample: Mapping[str, Any]) -> bool:
    """True when every message of a standard sample has empty or whitespace-only text."""
    from .processor import message_text

    messages = sample.get("messages") or []
    return all(not message_text(m).strip() for m in messages)


def _is_saved(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _hf_local_stream(info: DatasetInfo, files: list[Path], ctx: LoadContext) -> Any:
    """`datasets` streaming of local files (or a save_to_disk folder); nothing is written next to them."""
    import datasets

    path = Path(info.path)
    if _is_saved(path):
        from .plugins.loader import load_saved

        table = load_saved(path, info.split, ctx)
        assert isinstance(table, HFRows)
        return table.ds.to_iterable_dataset(num_shards=max(1, min(64, len(table.ds))))
    builder = loader_for(files[0], info.loader).hf_builder
    if builder is None:
        raise DataError(
            f"dataset {info.name!r}: loader {info.loader!r} cannot stream (no line reader and no "
            "`datasets` builder); set `streaming: false`"
        )
    return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=True)


def _take(it: Iterator[Sample], n: int) -> list[Sample]:
    out = []
    for sample in it:
        out.append(sample)
        if len(out) == n:
            break
    return out


class _EngineStream:
    """One reader's stream over a streaming engine: mixes the datasets' shards and converts rows."""

    def __init__(
        self, engine: DataEngine, reader: int, num_readers: int, state: dict[str, Any] | None
    ) -> None:
        if state is not None and (state.get("reader"), state.get("num_readers")) != (reader, num_readers):
            raise ValueError(
                f"stream state is for reader {state.get('reader')} of {state.get('num_readers')}, "
                f"not reader {reader} of {num_readers}: resume with the same world size and workers"
            )
        self.engine, self.reader, self.num_readers = engine, reader, num_readers
        self.names = list(engine.dataset_infos)
        self.ctxs = {n: LoadContext(n, engine.args.on_error) for n in self.names}
        stream_states = state["mix"]["streams"] if state is not None else [None] * len(self.names)
        streams = [
            engine._open_stream(n, reader, num_readers, s, self.ctxs[n])
            for n, s in zip(self.names, stream_states)
        ]
        weights = [w if (w := engine.dataset_infos[n].weight) is not None else 1.0 for n in self.names]
        self.mix = MixedStream(streams, weights, None if state is None else state["mix"])
        self.yielded = 0 if state is None else int(state["yielded"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "reader": self.reader,
            "num_readers": self.num_readers,
            "yielded": self.yielded,
            "mix": self.mix.state_dict(),
        }

    def __iter__(self) -> _EngineStream:
        return self

    def __next__(self) -> Sample:
        while True:
            try:
                k, row = next(self.mix)
            except StopIteration:
                for name, ctx in self.ctxs.items():
                    if ctx.skipped:
                        self.engine.skipped.setdefault(name, []).extend(ctx.skipped)
                        ctx.skipped = []
                self.engine._report_skipped()
                raise
            name = self.names[k]
            try:
                sample = self.engine._convert_data_sample(row, name, where=f"streamed row {self.yielded + 1}")
            except DataError as e:
                if self.engine.args.on_error != "skip":
                    raise
                self.ctxs[name].skipped.append((f"streamed row {self.yielded + 1}", str(e)))
                continue
            self.yielded += 1
            return sample


class _IterableView(IterableDataset):
    def __init__(self, engine: DataEngine) -> None:
        self.engine = engine

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.engine)

    def state_dict(self) -> dict[str, Any]:
        return self.engine.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state)
