"""The token store: a split's tokenized items on disk as memory-mapped numpy arrays, built once per key.

Layout of one store (``<cache_dir>/token_store/<key>/``): raw little-endian arrays plus ``manifest.json``
(dtype, shape, byte size and CRC-32 of every array, and the description the key was hashed from).

- ``tokens``  token ids, uint8/uint16/uint32 (the smallest the vocabulary allows)
- ``offsets`` int64, ``n + 1``: item ``j`` is ``tokens[offsets[j]:offsets[j + 1]]``
- ``trained`` uint8 per token (SFT): 1 where the label is the token, 0 where it is -100 (prompt)
- ``domains`` int32 per item; ``rows`` int64 per item: the source row (SFT: the row of dataset
  ``datasets[j]`` behind item ``j``; pretrain: the engine index of the document a block starts in)

SFT items are the source rows of every dataset (after `max_samples`, `val_size` and skipped rows), so the
per-epoch index (`size`/`weight` draws) maps onto them without a rebuild. Pretrain items are the
``cutoff_len`` blocks of each domain's token stream, exactly as `TokenizedData._pack` cuts them; a block is a
view ``tokens[j * cutoff_len:(j + 1) * cutoff_len]``.

The build tokenizes with HF `datasets`' batched ``map(num_proc=...)`` over an Arrow file of the converted
samples (see the data README for why this engine), writes into a temp dir next to the store and renames it
into place, so a killed build leaves nothing a later run would open. A file lock makes concurrent ranks and
sweep jobs build once and share the result. Opening verifies sizes and checksums; a damaged store is rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import inspect
import json
import logging
import math
import os
import pickle
import shutil
import time
import uuid
import zlib
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

logger = logging.getLogger(__name__)

STORE_FORMAT = 1
"""Bumped whenever the layout or the item semantics change (old stores then miss the key)."""
MANIFEST = "manifest.json"
_CHUNK = 1 << 26  # bytes per checksum read


def default_cache_dir() -> Path:
    """``$DATAFLEX_CACHE``, else ``$XDG_CACHE_HOME/dataflex``, else ``~/.cache/dataflex``."""
    if os.environ.get("DATAFLEX_CACHE"):
        return Path(os.environ["DATAFLEX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dataflex"


def store_root(cache_dir: str | os.PathLike | None) -> Path:
    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "token_store"


def check_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """Creates the store folder and proves it writable; raises naming `data.cache_dir` otherwise (called
    before any model loads)."""
    root = store_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PermissionError(
            f"data.cache_dir={str(cache_dir) if cache_dir else str(default_cache_dir())!r} is not "
            f"writable ({e.strerror or e}: {root}); the token store is built there. Set "
            "data.cache_dir to a writable folder."
        ) from None
    return root


@dataclass(frozen=True)
class StoreSettings:
    cache_dir: str | None = None
    """None: `default_cache_dir()`."""
    rebuild: bool = False
    """Build again even when a valid store exists (`data.rebuild_cache=true`)."""
    num_proc: int | None = None
    """Tokenizer processes of the build (`data.preprocessing_num_workers`); None: all cores for large data."""


# ------------------------------------------------------------------------------------------------ key
def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def tokenizer_identity(tokenizer) -> dict[str, Any]:
    """What makes two tokenizers encode alike: the fast backend's full serialisation (vocab, merges,
    normalizer, pre-tokenizer) or the slow one's vocabulary, plus special tokens and the chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return {
        "class": type(tokenizer).__name__,
        "backend": _sha(body),
        "size": len(tokenizer),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "chat_template": getattr(tokenizer, "chat_template", None),
    }


def _files_identity(path: Path) -> list[list[Any]]:
    """(path, size, mtime_ns) of a local data file, or of every file under a folder."""
    if not path.exists():
        return [[str(path), None, None]]
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _converter_identity(name: str | None) -> str | None:
    """Built-in converters are versioned by the package; a user's converter by its source text."""
    from .plugins.converter import _CONVERTERS

    fn = _CONVERTERS.get(name or "standard")
    if fn is None or fn.__module__.startswith("dataflex."):
        return name
    with contextlib.suppress(OSError, TypeError):
        return f"{name}:{_sha(inspect.getsource(fn))[:16]}"
    return f"{name}:{fn.__module__}.{fn.__qualname__}"


def store_description(engine, processor, mode: str) -> dict[str, Any]:
    """Everything an item depends on: the data files (size + mtime), their dataset_info records and
    converters, the split and the row choices (`max_samples`, `val_size`, `seed`, `on_error`), the tokenizer,
    the template, `cutoff_len`, `mode` and `train_on_prompt`. `packing` only changes collation, so it is not
    part of it."""
    args = engine.args
    datasets = []
    for name, info in engine.dataset_infos.items():
        record = asdict(info)
        record.pop("origin", None)
        record["converter"] = _converter_identity(info.converter)
        if info.source == "local":
            record["files"] = _files_identity(Path(info.path))
        record["rows"] = len(engine.datasets[name])
        datasets.append(record)
    return {
        "format": STORE_FORMAT,
        "split": engine.split,
        "mode": mode,
        "cutoff_len": processor.cutoff_len,
        "train_on_prompt": processor.train_on_prompt if mode == "sft" else None,
        "template": (processor.template.name, processor.template.jinja()) if mode == "sft" else None,
        "tokenizer": tokenizer_identity(processor.tokenizer),
        "datasets": datasets,
        "domain_names": list(engine.domain_names),
        "rows": {k: getattr(args, k) for k in ("max_samples", "val_size", "seed", "on_error")},
    }


def store_key(description: dict[str, Any]) -> str:
    return _sha(json.dumps(description, sort_keys=True, default=str))[:24]


# ------------------------------------------------------------------------------------------- the store
class CorruptStore(Exception):
    """A store whose files do not match its manifest."""


class TokenStore:
    """An opened (memory-mapped, read-only) store; see the module docstring for the arrays."""

    def __init__(self, path: Path, verify: bool = True) -> None:
        self.path = Path(path)
        try:
            self.manifest = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise CorruptStore(f"unreadable manifest ({e})") from None
        if self.manifest.get("format") != STORE_FORMAT or self.manifest.get("key") != self.path.name:
            raise CorruptStore("manifest does not belong to this store")
        self.arrays: dict[str, np.ndarray] = {}
        for name, spec in self.manifest["arrays"].items():
            file = self.path / spec["file"]
            size = file.stat().st_size if file.is_file() else -1
            if size != spec["bytes"] or math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize != size:
                raise CorruptStore(
                    f"{spec['file']} has {size} bytes, the manifest says {spec['bytes']} bytes of "
                    f"{spec['shape']} x {spec['dtype']}"
                )
            arr = (
                np.memmap(file, dtype=spec["dtype"], mode="r", shape=tuple(spec["shape"]))
                if spec["bytes"]
                else np.zeros(spec["shape"], dtype=spec["dtype"])
            )
            if verify and _crc_file(file) != spec["crc32"]:
                raise CorruptStore(f"{spec['file']} does not match its checksum")
            self.arrays[name] = arr
        self.tokens = self.arrays["tokens"]
        self.offsets = self.arrays["offsets"]
        if len(self.offsets) != len(self.arrays["domains"]) + 1 or int(self.offsets[-1]) > len(self.tokens):
            raise CorruptStore("offsets do not fit the items and tokens")
        self.trained = self.arrays.get("trained")
        self.domains = self.arrays["domains"]
        self.rows = self.arrays["rows"]
        self.item_dataset = self.arrays.get("datasets")
        self.mode: str = self.manifest["mode"]
        self.dataset_start = np.asarray(self.manifest.get("dataset_start", [0]), dtype=np.int64)

    def __reduce__(self):
        """Pickles as its path (spawned DataLoader workers re-map the files instead of copying the arrays)."""
        return (TokenStore, (self.path, False))

    def __len__(self) -> int:
        return len(self.domains)

    def ids(self, j: int) -> np.ndarray:
        return self.tokens[self.offsets[j] : self.offsets[j + 1]]

    def item(self, j: int) -> tuple[list[int], list[int]]:
        """(input ids, labels) of item `j` as Python lists (labels -100 where not trained)."""
        a, b = int(self.offsets[j]), int(self.offsets[j + 1])
        ids = self.tokens[a:b].astype(np.int64)
        if self.trained is None:
            lst = ids.tolist()
            return lst, list(lst)
        return ids.tolist(), np.where(self.trained[a:b] != 0, ids, -100).tolist()


def _crc_file(path: Path) -> int:
    """CRC-32 by plain reads, not through the memory map: the checked pages then stay in the page cache
    instead of counting as this process's resident memory."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def token_dtype(vocab_size: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.int64)


# ------------------------------------------------------------------------------------------- open/build
def open_or_build(engine, processor, mode: str, settings: StoreSettings) -> TokenStore:
    """The store of (engine, processor, mode): opened if a valid one exists, else built (once, under a file
    lock shared by every rank and sweep job using this cache dir)."""
    from filelock import FileLock

    root = check_cache_dir(settings.cache_dir)
    description = store_description(engine, processor, mode)
    key = store_key(description)
    path = root / key
    with FileLock(str(root / f"{key}.lock")):
        if path.exists() and not settings.rebuild:
            try:
                store = TokenStore(path)
                logger.info(
                    "token store: %s (%d items, %s tokens) loaded from the cache",
                    path,
                    len(store),
                    f"{len(store.tokens):,}",
                )
                return store
            except CorruptStore as e:
                logger.warning("token store %s is damaged (%s): rebuilding it", path, e)
        elif settings.rebuild and path.exists():
            logger.info("token store %s: data.rebuild_cache=true, rebuilding", path)
        else:
            _log_miss(root, description, key)
        _remove_stale_builds(root, key)
        build(engine, processor, mode, root, key, description, settings.num_proc)
        return TokenStore(path, verify=False)


def _log_miss(root: Path, description: dict[str, Any], key: str) -> None:
    """Says why an existing store of the same split and data was not reused (e.g. a data file changed)."""
    names = [d["name"] for d in description["datasets"]]
    for manifest in root.glob(f"*/{MANIFEST}"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            old = json.loads(manifest.read_text())["description"]
            if [d["name"] for d in old["datasets"]] != names or old["split"] != description["split"]:
                continue
            changed = sorted(k for k in description if old.get(k) != description[k])
            files = [
                f"{n[0]}"
                for d_new, d_old in zip(description["datasets"], old["datasets"])
                for n in d_new.get("files", [])
                if n not in d_old.get("files", [])
            ]
            logger.info(
                "token store: building %s (the store %s was built for other %s%s)",
                key,
                manifest.parent.name,
                ", ".join(changed),
                f"; changed files: {files}" if files else "",
            )
            return
    logger.info("token store: building %s under %s", key, root)


def _remove_stale_builds(root: Path, key: str) -> None:
    """Temp folders of builds of this key that were killed (we hold the key's lock, so none is running)."""
    for stale in root.glob(f".build-{key}-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _estimate_bytes(source_bytes: int, mode: str) -> int:
    """Disk the build needs at its peak: the source Arrow file, the tokenized Arrow file (int32 ids and list
    offsets, ~1 byte of text per byte of ids at ~4 chars/token) and the store itself."""
    return int(source_bytes * (3.5 if mode == "sft" else 3.0)) + (1 << 20)


class DiskFull(OSError):
    pass


def build(
    engine, processor, mode: str, root: Path, key: str, description: dict[str, Any], num_proc: int | None
) -> None:
    """Builds the store `root/key` in a temp folder and renames it into place."""
    tmp = root / f".build-{key}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    started = time.perf_counter()
    estimate = None
    try:
        source = tmp / "source.arrow"
        rows = _write_source(engine, mode, source)
        estimate = _estimate_bytes(source.stat().st_size, mode)
        free = shutil.disk_usage(root).free
        if free < estimate:
            raise OSError(errno.ENOSPC, "not enough free space")
        tokenized = _tokenize(source, processor, mode, tmp / "tokenized", num_proc, rows, key)
        manifest = _write_arrays(tokenized, processor, mode, tmp, description, key, engine)
        del tokenized
        source.unlink()
        shutil.rmtree(tmp / "tokenized", ignore_errors=True)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        os.replace(tmp, root / key) if not (root / key).exists() else _swap(tmp, root / key)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            need = estimate if estimate is not None else "an unknown number of"
            raise DiskFull(
                errno.ENOSPC,
                f"disk full while building the token store in {root} (data.cache_dir): it "
                f"needs about {need} bytes, {shutil.disk_usage(root).free} are free. Free space there or "
                "set data.cache_dir to a larger disk.",
            ) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "token store: built %s in %.1f s (%s items, %s tokens)",
        root / key,
        time.perf_counter() - started,
        f"{manifest['num_items']:,}",
        f"{manifest['arrays']['tokens']['shape'][0]:,}",
    )


def _swap(tmp: Path, final: Path) -> None:
    """Replace a damaged/forced store: move the old one aside first (rename is atomic), then delete it."""
    old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


# ---- step 1: the converted samples as an Arrow file (pickled samples or plain texts)
_SOURCE_BATCH = 4096  # rows per record batch of the source file (bounds the build's memory)


def _write_source(engine, mode: str, path: Path) -> int:
    """Writes the build's input, in item order, in batches (bounded memory); returns the row count.
    Pretrain text datasets backed by Arrow are copied column to column without Python strings
    (`_arrow_texts`); other sources are converted row by row."""
    import pyarrow as pa

    if mode == "sft":
        schema = pa.schema(
            [("sample", pa.binary()), ("domain", pa.int32()), ("dataset", pa.int32()), ("row", pa.int64())]
        )
        batches = _sft_batches(engine, schema)
    else:
        schema = pa.schema([("text", pa.large_string()), ("domain", pa.int32()), ("row", pa.int64())])
        fast = _arrow_texts(engine)
        batches = _text_batches(engine, schema, *fast) if fast else _converted_text_batches(engine, schema)
    count = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            count += batch.num_rows
    return count


def _sft_batches(engine, schema):
    """Every row of every dataset (in dataset order), converted once and pickled; tables are iterated in
    order (Arrow tables batch-wise), not indexed row by row."""
    import pyarrow as pa

    domain_of = {d: k for k, d in enumerate(engine.domain_names)}
    for k, (name, table) in enumerate(engine.datasets.items()):
        dom = domain_of[engine.dataset_infos[name].domain]
        samples: list[bytes] = []
        start = 0
        for r, raw in enumerate(table):
            sample = engine._convert_data_sample(raw, name, where=lambda r=r, t=table: t.where(r))
            samples.append(pickle.dumps(sample, protocol=5))
            if len(samples) == _SOURCE_BATCH or r == len(table) - 1:
                n = len(samples)
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(samples, pa.binary()),
                        pa.array(np.full(n, dom, np.int32)),
                        pa.array(np.full(n, k, np.int32)),
                        pa.array(np.arange(start, start + n, dtype=np.int64)),
                    ],
                    schema=schema,
                )
                samples, start = [], start + n


def _domain_order(engine) -> np.ndarray:
    """Engine indices of domain 0's documents, then domain 1's, ...: the order of the pretrain stream."""
    return np.concatenate([engine.domain_rows(d) for d in range(len(engine.domain_names))])


def _converted_text_batches(engine, schema):
    import pyarrow as pa

    from .processor import message_text

    order = _domain_order(engine)
    domains = engine.domain_ids[order].astype(np.int32)
    for s in range(0, len(order), _SOURCE_BATCH):
        idx = order[s : s + _SOURCE_BATCH]
        texts = [" ".join(message_text(m) for m in engine[int(i)]["messages"]) for i in idx]
        yield pa.RecordBatch.from_arrays(
            [pa.array(texts, pa.large_string()), pa.array(domains[s : s + len(idx)]), pa.array(idx)],
            schema=schema,
        )


def _text_batches(engine, schema, texts, starts: np.ndarray):
    """The pretrain source taken from the datasets' text columns (`_arrow_texts`) in stream order."""
    import pyarrow as pa

    index = engine.data_index
    order = _domain_order(engine)
    domains = engine.domain_ids[order].astype(np.int32)
    position = starts[index.dataset_ids[order]] + index.row_ids[order]
    for s in range(0, len(order), _SOURCE_BATCH):
        taken = texts.take(pa.array(position[s : s + _SOURCE_BATCH]))
        n = len(taken)
        yield pa.RecordBatch.from_arrays(
            [taken.combine_chunks(), pa.array(domains[s : s + n]), pa.array(order[s : s + n])],
            schema=schema,
        )


def _arrow_texts(engine):
    """(every dataset's text column concatenated as one large_string Arrow array, each dataset's start in
    it) when every dataset uses the built-in `text` converter on a table whose column can be read whole
    (the document text is then exactly that column, as `_converted_text_batches` would join it); None
    otherwise."""
    import pyarrow as pa

    from .plugins.converter import _CONVERTERS, text_column, text_converter

    columns, sizes = [], []
    for name, table in engine.datasets.items():
        info = engine.dataset_infos[name]
        if table is None or info.converter != "text" or _CONVERTERS.get("text") is not text_converter:
            return None
        column = _text_column(table, text_column(info.converter_options.get("columns")))
        if column is None or len(column) != len(table):
            return None
        columns.append(column)
        sizes.append(len(table))
    chunks = [c for col in columns for c in col.chunks]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return pa.chunked_array(chunks, pa.large_string()), starts


def _text_column(table, key: str):
    """Column `key` of a row table as a large_string ChunkedArray (in table row order), or None when the
    table is not one whose column can be read without converting rows."""
    import pyarrow as pa

    from .plugins.loader import ArrowRows, ConcatRows, ListRows, SubsetRows

    if isinstance(table, ArrowRows):
        if key not in table.table.column_names:
            return None
        column = table.table.column(key)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            return None
        return column.cast(pa.large_string())
    if isinstance(table, ListRows):
        values = [row.get(key) if isinstance(row, dict) else None for row in table.rows]
        if not all(isinstance(v, str) for v in values):
            return None
        return pa.chunked_array([pa.array(values, pa.large_string())])
    if isinstance(table, ConcatRows):
        parts = [_text_column(p, key) for p in table.parts]
        if any(p is None for p in parts):
            return None
        return pa.chunked_array([c for p in parts for c in p.chunks], pa.large_string())
    if isinstance(table, SubsetRows):
        base = _text_column(table.base, key)
        return None if base is None else base.take(pa.array(table.keep))
    return None


# ---- step 2: tokenize with datasets' batched map (Arrow batches in, Arrow batches out)
class _EncodeSFT:
    """Picklable batched map function: `SFTProcessor.encode_many` (one tokenizer call per batch, the same
    ids and labels as one `processor.encode` per sample), results as Arrow list arrays."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, batch):
        import pyarrow as pa

        samples = [pickle.loads(raw) for raw in batch.column("sample").to_pylist()]
        ids, trained, lengths = self.processor.encode_many(samples)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        return pa.table(
            {
                "ids": pa.ListArray.from_arrays(offsets, pa.array(ids)),
                "trained": pa.ListArray.from_arrays(offsets, pa.array(trained.view(np.int8))),
                **{k: batch.column(k) for k in ("domain", "dataset", "row")},
            }
        )


class _EncodeText:
    """Picklable batched map function: one batched tokenizer call (`encode_texts`), EOS after each
    document, results as an Arrow list array built from numpy (no per-token Python lists)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id

    def __call__(self, batch):
        import pyarrow as pa

        from .processor import encode_texts

        encoded = encode_texts(self.tokenizer, batch.column("text").to_pylist())
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        flat = np.fromiter(chain.from_iterable(encoded), np.int32, int(lengths.sum()))
        if self.eos is not None:
            flat = np.insert(flat, np.cumsum(lengths), self.eos)
            lengths = lengths + 1
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        ids = pa.ListArray.from_arrays(offsets, pa.array(flat))
        return pa.table({"ids": ids, "domain": batch.column("domain"), "row": batch.column("row")})


def auto_num_proc(rows: int) -> int:
    """All cores for large builds; one process below ~20k rows (forking costs more than it saves)."""
    return max(1, min(os.cpu_count() or 1, math.ceil(rows / 20_000)))


def _tokenize(source: Path, processor, mode: str, out: Path, num_proc: int | None, rows: int, key: str):
    import datasets

    out.mkdir()
    ds = datasets.Dataset.from_file(str(source))
    procs = num_proc or auto_num_proc(rows)
    fn: _EncodeSFT | _EncodeText
    if mode == "sft":
        fn, drop = _EncodeSFT(processor), ["sample"]
        features = datasets.Features(
            {
                "ids": datasets.Sequence(datasets.Value("int32")),
                "trained": datasets.Sequence(datasets.Value("int8")),
                "domain": datasets.Value("int32"),
                "dataset": datasets.Value("int32"),
                "row": datasets.Value("int64"),
            }
        )
    else:
        fn, drop = _EncodeText(processor.tokenizer), ["text"]
        features = datasets.Features(
            {
                "ids": datasets.Sequence(datasets.Value("int32")),
                "domain": datasets.Value("int32"),
                "row": datasets.Value("int64"),
            }
        )
    with _quiet_datasets():
        return ds.with_format("arrow").map(
            fn,
            batched=True,
            batch_size=512,
            num_proc=procs if procs > 1 else None,
            remove_columns=drop,
            features=features,
            new_fingerprint=f"dataflex-store-{key}",
            cache_file_name=str(out / "tokenized.arrow"),
            desc="tokenizing (token store)",
        )


@contextlib.contextmanager
def _quiet_datasets():
    import datasets

    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_warning()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)


# ---- step 3: the flat arrays
class _ArrayWriter:
    """Appends numpy chunks to one raw file, tracking size and CRC-32 for the manifest."""

    def __init__(self, path: Path, dtype: DTypeLike) -> None:
        self.path, self.dtype = path, np.dtype(dtype)
        self.file = open(path, "wb")  # noqa: SIM115 (closed in spec())
        self.count, self.crc = 0, 0

    def write(self, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=self.dtype)
        raw = data.reshape(-1).view(np.uint8).data  # (a memoryview of the bytes)
        self.file.write(raw)
        self.crc = zlib.crc32(raw, self.crc)
        self.count += data.size

    def spec(self) -> dict[str, Any]:
        self.file.close()
        return {
            "file": self.path.name,
            "dtype": self.dtype.str,
            "shape": [self.count],
            "bytes": self.count * self.dtype.itemsize,
            "crc32": self.crc,
        }


def _column(table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def _write_arrays(
    tokenized, processor, mode: str, tmp: Path, description: dict[str, Any], key: str, engine
) -> dict[str, Any]:
    import pyarrow.compute as pc

    table = tokenized.data.table
    dtype = token_dtype(len(processor.tokenizer))
    bound = np.iinfo(dtype).max
    lengths = np.concatenate(
        [np.zeros(0, np.int64)]
        + [pc.list_value_length(c).to_numpy(zero_copy_only=False) for c in table.column("ids").chunks]
    ).astype(np.int64)
    domains = _column(table, "domain").astype(np.int32)
    rows = _column(table, "row").astype(np.int64)
    writers = {"tokens": _ArrayWriter(tmp / "tokens.bin", dtype)}
    if mode == "sft":
        writers["trained"] = _ArrayWriter(tmp / "trained.bin", np.uint8)
        keep = lengths
        item_offsets = np.concatenate([[0], np.cumsum(lengths)])
        item_domains, item_rows = domains, rows
    else:
        keep, item_offsets, item_domains, item_rows = _blocks(
            lengths, domains, rows, processor.cutoff_len, list(engine.domain_names)
        )
    pos = 0
    for batch in table.to_batches():
        n = batch.num_rows
        values = batch.column("ids").flatten().to_numpy()
        lens, kept = lengths[pos : pos + n], keep[pos : pos + n]
        mask = None
        if (kept != lens).any():
            starts = np.repeat(np.cumsum(lens) - lens, lens)
            mask = (np.arange(len(values)) - starts) < np.repeat(kept, lens)
            values = values[mask]
        if values.size and int(values.max()) > bound:
            raise ValueError(
                f"token id {int(values.max())} exceeds the tokenizer's vocabulary "
                f"({len(processor.tokenizer)})"
            )
        writers["tokens"].write(values)
        if mode == "sft":
            writers["trained"].write(batch.column("trained").flatten().to_numpy())
        pos += n
    arrays = {name: w.spec() for name, w in writers.items()}
    extra: dict[str, np.ndarray] = {
        "offsets": item_offsets.astype(np.int64),
        "domains": item_domains.astype(np.int32),
        "rows": item_rows.astype(np.int64),
    }
    manifest: dict[str, Any] = {"format": STORE_FORMAT, "key": key, "mode": mode, "description": description}
    if mode == "sft":
        extra["datasets"] = _column(table, "dataset").astype(np.int32)
        sizes = [len(t) for t in engine.datasets.values()]
        manifest["dataset_start"] = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
    for name, arr in extra.items():
        w = _ArrayWriter(tmp / f"{name}.bin", arr.dtype)
        w.write(arr)
        arrays[name] = w.spec()
    manifest["arrays"] = arrays
    manifest["num_items"] = len(item_domains)
    return manifest


def _blocks(lengths: np.ndarray, domains: np.ndarray, rows: np.ndarray, cutoff: int, names: list[str]):
    """Pretrain: per document, how many of its tokens fall into the full `cutoff` blocks of its domain's
    stream; and per block its offset, domain and the engine index of the document its first token comes
    from."""
    from dataflex.data.processor import check_domain_blocks

    n_domains = len(names)
    totals = np.bincount(domains, weights=lengths, minlength=n_domains).astype(np.int64)
    docs = np.bincount(
        domains, minlength=n_domains
    )  # a domain without documents in this split is not "short"
    check_domain_blocks(
        {names[d]: int(totals[d]) for d in range(n_domains) if docs[d] and totals[d] < cutoff}, cutoff
    )
    keep = np.zeros_like(lengths)
    offsets, block_domains, block_rows = [], [], []
    written = 0
    for d in range(n_domains):
        sel = np.flatnonzero(domains == d)
        if not len(sel):
            continue
        lens = lengths[sel]
        starts = np.cumsum(lens) - lens
        n_blocks = int(lens.sum()) // cutoff
        budget = n_blocks * cutoff
        keep[sel] = np.clip(budget - starts, 0, lens)
        block_starts = np.arange(n_blocks, dtype=np.int64) * cutoff
        doc = np.searchsorted(np.cumsum(lens), block_starts, side="right")
        offsets.append(written + block_starts)
        block_domains.append(np.full(n_blocks, d, dtype=np.int32))
        block_rows.append(rows[sel][doc])
        written += budget
    if not written:
        raise ValueError(
            f"data.mode=pretrain: not one full block of cutoff_len={cutoff} tokens; lower data.cutoff_len."
        )
    offsets.append(np.asarray([written], dtype=np.int64))
    return keep, np.concatenate(offsets), np.concatenate(block_domains), np.concatenate(block_rows)
