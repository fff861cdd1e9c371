"""`DataLoaderPlugin`: read a dataset's rows, by file type, from local files, `save_to_disk` folders or the
Hugging Face Hub.

A loaded dataset is a *row table*: ``len(t)``, ``t[i] -> dict``, fast ``iter(t)`` and ``t.where(i)`` (a
human description of row ``i``, e.g. ``"data.jsonl line 17"``, used in error messages). JSON files are
parsed by DataFlex itself (so a malformed line is reported with its file and line number and
``on_error=skip`` can skip it); columnar files are read with pyarrow and kept columnar (memory-mapped
where the format allows). Nothing is written next to the user's data: no cache files, no lock files.

Register a loader for another file type from your own module::

    from dataflex.data import register_loader, LoaderPlugin

    @register_loader("tsv", extensions=(".tsv",))
    class TsvLoader(LoaderPlugin):
        def load(self, path, ctx): ...        # return a row table (e.g. `ListRows`)

and name it with ``loader: tsv`` in dataset_info (or give files that suffix).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import DataError

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ row tables
class RowTable(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    def __iter__(self) -> Iterator[dict[str, Any]]: ...
    def where(self, i: int) -> str: ...


class ListRows:
    """Rows held as Python dicts (JSON/text files); `lines[i]` is row i's 1-based line or element number."""

    def __init__(
        self, rows: list[dict[str, Any]], source: str, lines: np.ndarray | None = None, unit: str = "line"
    ) -> None:
        self.rows, self.source, self.unit = rows, source, unit
        self.lines = np.arange(1, len(rows) + 1) if lines is None else lines

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def where(self, i: int) -> str:
        return f"{self.source} {self.unit} {int(self.lines[i])}"


class ArrowRows:
    """Rows of a pyarrow table (csv/parquet/arrow files), converted to dicts on access."""

    def __init__(self, table: Any, source: str) -> None:
        self.table, self.source = table, source

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.table.slice(i, 1).to_pylist()[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.table.to_batches(max_chunksize=4096):
            yield from batch.to_pylist()

    def where(self, i: int) -> str:
        return f"{self.source} row {i + 1}"


class HFRows:
    """Rows of a `datasets.Dataset` (hub datasets, `save_to_disk` folders)."""

    def __init__(self, ds: Any, source: str) -> None:
        self.ds, self.source = ds, source

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.ds[int(i)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.ds)

    def where(self, i: int) -> str:
        return f"{self.source} row {i + 1}"


class ConcatRows:
    """Several tables read as one (a directory of files), in order."""

    def __init__(self, parts: list[RowTable]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, i: int) -> tuple[RowTable, int]:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k], i - int(self.starts[k])

    def __getitem__(self, i: int) -> dict[str, Any]:
        part, j = self._locate(i)
        return part[j]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for part in self.parts:
            yield from part

    def where(self, i: int) -> str:
        part, j = self._locate(i)
        return part.where(j)


class SubsetRows:
    """The rows `keep` of a table (first `max_samples` rows, or rows left after `on_error=skip`)."""

    def __init__(self, base: RowTable, keep: np.ndarray) -> None:
        self.base, self.keep = base, np.asarray(keep, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.base[int(self.keep[i])]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if len(self.keep) and self.keep[-1] == len(self.keep) - 1:  # a prefix: iterate the base fast
            for n, row in enumerate(self.base):
                if n >= len(self.keep):
                    return
                yield row
        else:
            for i in self.keep:
                yield self.base[int(i)]

    def where(self, i: int) -> str:
        return self.base.where(int(self.keep[i]))


# ---------------------------------------------------------------------------------------------- context
@dataclass
class LoadContext:
    """What a loader needs besides the path: the dataset's name (for messages) and the error policy.
    Skipped rows are recorded in `skipped` as ``(where, reason)`` and reported by the engine."""

    dataset: str
    on_error: str = "raise"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def bad_row(self, where: str, reason: str) -> None:
        if self.on_error == "skip":
            self.skipped.append((where, reason))
            return
        raise DataError(
            f"dataset {self.dataset!r}: {where}: {reason}. Fix the row, or set "
            "data.on_error=skip to skip malformed rows (they are counted and reported)."
        )


# --------------------------------------------------------------------------------------------- registry
class LoaderPlugin:
    """Reads one file type. `load` returns a row table; `stream` (optional) returns a lazy, sharded,
    resumable reader (see `dataflex.data.streaming`); without it streaming goes through `datasets`."""

    name: str = ""
    extensions: tuple[str, ...] = ()
    hf_builder: str | None = None
    """The `datasets` packaged builder for this file type, used for `datasets` streaming."""

    def load(self, path: Path, ctx: LoadContext) -> RowTable:
        raise NotImplementedError

    def stream(
        self, path: Path, shard: int, num_shards: int, ctx: LoadContext, state: dict[str, Any] | None
    ) -> Any:
        return None


_LOADERS: dict[str, LoaderPlugin] = {}
_BY_EXTENSION: dict[str, str] = {}


def register_loader(name: str, extensions: tuple[str, ...] = ()) -> Callable[[type], type]:
    """Class decorator registering a `LoaderPlugin` subclass under `name` and its file suffixes."""

    def deco(cls: type) -> type:
        plugin = cls()
        plugin.name, plugin.extensions = name, tuple(e.lower() for e in extensions)
        _LOADERS[name] = plugin
        for ext in plugin.extensions:
            _BY_EXTENSION[ext] = name
        return cls

    return deco


def get_loader(name: str) -> LoaderPlugin:
    try:
        return _LOADERS[name]
    except KeyError:
        raise DataError(
            f"Unknown loader {name!r}. Registered loaders: {list_loaders()}. Fix the `loader` key "
            "in dataset_info, or register yours with @dataflex.data.register_loader(name)."
        ) from None


def list_loaders() -> list[str]:
    return sorted(_LOADERS)


def data_extensions() -> list[str]:
    """File suffixes some registered loader reads (these paths are data files, not hub ids)."""
    return sorted(_BY_EXTENSION)


def loader_for(path: Path, name: str | None = None) -> LoaderPlugin:
    """The loader named `name`, else the one registered for the file's suffix."""
    if name is not None:
        return get_loader(name)
    ext = path.suffix.lower()
    if ext not in _BY_EXTENSION:
        raise DataError(
            f"no loader for {str(path)!r} (suffix {ext!r}). Registered loaders: "
            f"{ {n: list(p.extensions) for n, p in sorted(_LOADERS.items())} }. Set `loader` in "
            "dataset_info or register one with @dataflex.data.register_loader."
        )
    return _LOADERS[_BY_EXTENSION[ext]]


# ---------------------------------------------------------------------------------------- file loaders
BLANK = b" \t\r\n"
"""A line made only of these bytes (JSON whitespace) is blank: skipped, never an error, never a row."""


def _line_error(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"malformed JSON ({e.msg}, column {e.colno})"
    if isinstance(e, UnicodeDecodeError):
        return f"not valid UTF-8 ({e.reason})"
    return f"{type(e).__name__}: {e}"


@register_loader("jsonl", extensions=(".jsonl",))
class JsonlLoader(LoaderPlugin):
    """JSON Lines: one object per line; blank lines are allowed and ignored."""

    hf_builder = "json"

    def load(self, path: Path, ctx: LoadContext) -> RowTable:
        rows: list[dict[str, Any]] = []
        lines: list[int] = []
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip(BLANK):
                    continue
                try:
                    obj = parse_json_bytes(raw)
                except (ValueError, UnicodeDecodeError) as e:
                    ctx.bad_row(f"{path} line {lineno}", _line_error(e))
                    continue
                if not isinstance(obj, dict):
                    ctx.bad_row(f"{path} line {lineno}", f"expected a JSON object, got {type(obj).__name__}")
                    continue
                rows.append(obj)
                lines.append(lineno)
        return ListRows(rows, str(path), np.asarray(lines, dtype=np.int64))

    def stream(
        self, path: Path, shard: int, num_shards: int, ctx: LoadContext, state: dict[str, Any] | None
    ) -> Any:
        from ..streaming import LineStream

        return LineStream(path, shard, num_shards, ctx, _json_row, state)


_DECODER = json.JSONDecoder()


def parse_json_bytes(raw: bytes) -> Any:
    """`json.loads` for one UTF-8 line, minus its per-call encoding sniffing (a leading BOM is dropped)."""
    text = raw.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    return _DECODER.decode(text)


def _json_row(raw: bytes) -> dict[str, Any]:
    obj = parse_json_bytes(raw)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


@register_loader("json", extensions=(".json",))
class JsonLoader(LoaderPlugin):
    """A JSON array of objects (LLaMA-Factory's usual `.json`); a `.json` file holding JSON Lines is read
    as JSON Lines."""

    hf_builder = "json"

    def load(self, path: Path, ctx: LoadContext) -> RowTable:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            if e.msg == "Extra data":  # several top-level values: JSON Lines in a .json file
                return JsonlLoader().load(path, ctx)
            raise DataError(
                f"dataset {ctx.dataset!r}: {path} line {e.lineno}: malformed JSON ({e.msg}, "
                f"column {e.colno}); a .json file must be one JSON array of objects"
            ) from e
        except UnicodeDecodeError as e:
            raise DataError(f"dataset {ctx.dataset!r}: {path} is not valid UTF-8 ({e.reason})") from e
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise DataError(
                f"dataset {ctx.dataset!r}: {path} must hold a JSON array of objects, "
                f"got {type(data).__name__}"
            )
        rows, idx = [], []
        for i, obj in enumerate(data, start=1):
            if not isinstance(obj, dict):
                ctx.bad_row(f"{path} element {i}", f"expected a JSON object, got {type(obj).__name__}")
                continue
            rows.append(obj)
            idx.append(i)
        return ListRows(rows, str(path), np.asarray(idx, dtype=np.int64), unit="element")


@register_loader("txt", extensions=(".txt",))
class TextLoader(LoaderPlugin):
    """Plain text: one row ``{"text": line}`` per non-blank line (use converter `text`)."""

    hf_builder = "text"

    def load(self, path: Path, ctx: LoadContext) -> RowTable:
        rows, lines = [], []
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip(BLANK):
                    continue
                try:
                    text = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    ctx.bad_row(f"{path} line {lineno}", _line_error(e))
                    continue
                rows.append({"text": text})
                lines.append(lineno)
        return ListRows(rows, str(path), np.asarray(lines, dtype=np.int64))

    def stream(
        self, path: Path, shard: int, num_shards: int, ctx: LoadContext, state: dict[str, Any] | None
    ) -> Any:
        from ..streaming import LineStream

        return LineStream(path, shard, num_shards, ctx, _text_row, state)


def _text_row(raw: bytes) -> dict[str, Any]:
    return {"text": raw.decode("utf-8").rstrip("\r")}


@register_loader("csv", extensions=(".csv",))
class CsvLoader(LoaderPlugin):
    """CSV with a header row; every column is read as text (no type guessing that would turn an answer
    "166" into a number)."""

    hf_builder = "csv"

    def load(self, path: Path, ctx: LoadContext) -> RowTable:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        try:
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            if not header:
                raise DataError(f"dataset {ctx.dataset!r}: {path} is empty (a CSV needs a header row)")
            table = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in header}, strings_can_be_null=False
                ),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"dataset {ctx.dataset!r}: cannot parse CSV {path}: {e}") from e
        return ArrowRows(table, str(path))


@register_loader("parquet", extensions=(".parquet",))
class ParquetLoader(LoaderPlugin):
    hf_builder = "parquet"

    def load(self, path: Path, ctx: LoadContext) -> RowTable:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return ArrowRows(pq.read_table(path, memory_map=True), str(path))
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"dataset {ctx.dataset!r}: cannot read Parquet file {path}: {e}") from e


@register_loader("arrow", extensions=(".arrow",))
class ArrowLoader(LoaderPlugin):
    """Arrow IPC, file or stream format (the latter is what `datasets` writes), memory-mapped."""

    hf_builder = "arrow"

    def load(self, path: Path, ctx: LoadContext) -> RowTable:
        import pyarrow as pa

        try:
            source = pa.memory_map(str(path))
            try:
                table = pa.ipc.open_file(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                table = pa.ipc.open_stream(source).read_all()
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"dataset {ctx.dataset!r}: cannot read Arrow file {path}: {e}") from e
        return ArrowRows(table, str(path))


# ------------------------------------------------------------------------------------ dataset loading
def load_local(path: Path, loader: str | None, ctx: LoadContext, split: str = "train") -> RowTable:
    """A local file, a directory of files, or a `save_to_disk` folder."""
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return load_saved(path, split, ctx)
        files = data_files_in(path, loader)
        parts = [loader_for(f, loader).load(f, ctx) for f in files]
        return parts[0] if len(parts) == 1 else ConcatRows(parts)
    return loader_for(path, loader).load(path, ctx)


def data_files_in(folder: Path, loader: str | None = None) -> list[Path]:
    """The data files of a directory (sorted, one file type); hidden files are ignored."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if loader is None:
        files = [p for p in files if p.suffix.lower() in _BY_EXTENSION]
        kinds = {_BY_EXTENSION[p.suffix.lower()] for p in files}
        if len(kinds) > 1:
            raise DataError(
                f"directory {str(folder)!r} mixes file types {sorted(kinds)}; keep one type per "
                "dataset or list the files as separate datasets in a dataset_info.yaml"
            )
    if not files:
        raise DataError(
            f"directory {str(folder)!r} holds no data files (supported suffixes: {sorted(_BY_EXTENSION)})"
        )
    return files


def load_saved(path: Path, split: str, ctx: LoadContext) -> RowTable:
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (memory-mapped, read-only)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"dataset {ctx.dataset!r}: cannot read the save_to_disk folder {path}: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(
                f"dataset {ctx.dataset!r}: split {split!r} is not in {path} (splits: "
                f"{sorted(ds)}); set `split` (or `eval`) in dataset_info"
            )
        ds = ds[split]
    return HFRows(ds, f"{path} [{split}]")


def _offline_hint() -> str:
    return (
        "The Hugging Face Hub could not be reached (this machine is offline, or HF_HUB_OFFLINE=1 is "
        "set). Download the dataset where there is network (e.g. `datasets.load_dataset(...)."
        "save_to_disk(dir)` or the raw files) and point `path` in dataset_info at the local copy."
    )


def load_hub(info: Any, ctx: LoadContext, streaming: bool = False) -> Any:
    """Load a hub dataset with `datasets.load_dataset` (real code path; cached by `datasets` in its own
    cache, never in the user's data folder)."""
    import datasets

    kwargs: dict[str, Any] = {"split": info.split, "streaming": streaming}
    if info.hub_file is not None:
        kwargs["data_files"] = info.hub_file
    try:
        return datasets.load_dataset(info.path, info.subset, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure here is reported with the dataset named
        raise DataError(
            f"dataset {ctx.dataset!r} ({info.origin}): could not load hub dataset {info.path!r}"
            f"{' file ' + repr(info.hub_file) if info.hub_file else ''} split {info.split!r}: "
            f"{type(e).__name__}: {e}. {_offline_hint()}"
        ) from e


def hub_download(repo_id: str, filename: str, what: str) -> str:
    """Fetch one file of a hub dataset repo (e.g. a hosted dataset_info.yaml) via `hf_hub_download`."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset")
    except Exception as e:  # noqa: BLE001
        raise DataError(
            f"{what}: could not download {filename!r} from hub dataset {repo_id!r}: "
            f"{type(e).__name__}: {e}. {_offline_hint()}"
        ) from e


def load_rows(info: Any, ctx: LoadContext) -> RowTable:
    """Load the rows of one (non-streaming) dataset record."""
    if info.source == "hf_hub":
        ds = load_hub(info, ctx, streaming=False)
        return HFRows(
            ds, f"hub:{info.path}" + (f"/{info.hub_file}" if info.hub_file else "") + f" [{info.split}]"
        )
    return load_local(Path(info.path), info.loader, ctx, info.split)


def first_row(table: RowTable) -> Mapping[str, Any] | None:
    for row in table:
        return row
    return None
