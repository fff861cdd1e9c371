"""The data ledger: one row per trained sample per optimizer step, in `<run dir>/ledger/*.parquet`.

Columns (one row per slot of the global batch, in the order the loop trained them):
- `step` (int32): the optimizer step the sample was trained in, 1-based as in metrics.jsonl and checkpoint-N;
- `position` (int32): its slot in that step's global batch (rank 0's micro-batches first);
- `sample_id` (int64): the item id of the training data (the row of `TokenizedData`; a stream's slot number);
- `domain` (string, dictionary-encoded): the item's domain name;
- `weight` (float32): the sample's weight in the update relative to a plain mean (N x w_i for a weighter's
  w over N samples; 1.0 under plain training);
- `stage` (string, dictionary-encoded): provenance, the stage that put the sample there (e.g. `static`,
  `dynamic_select:loss`);
- `skipped` (bool): the update of that step was dropped (non-finite loss, `trainer.nan_policy=skip_step`).

Rows are buffered on rank 0 and appended as a new part file (`part-<first>-<last>.parquet`, written to a
`.tmp` name and renamed, so a part is complete or absent) every `flush_every` steps, at every checkpoint step
and when the loop ends (also on a signal or an error). A resumed run first drops the rows of steps after the
checkpoint's step, so its ledger equals the uninterrupted run's: a SIGKILL loses only buffered rows of steps
after the last checkpoint, which the resume trains (and records) again.

A trainer tells the ledger more than the ids through two optional hooks: `ledger_weights(ctx)` (the global
batch's per-sample weights as above, or None for 1.0) and `ledger_stages(ctx)` (one stage name, or one per
slot). Without them the stage is the trainer kind and its component's name. A stage's `key=value` segments are
parameters of the decision, not part of the stage's name (dynamic_mix: `dynamic_mix:odm:p=0.25`, the
proportion of the sample's domain when the step was drawn); `stage_name` drops them, and reports group by it.

Next to the parts, `data.json` records which data the ids index (`dataflex.mixing.recipe.data_fingerprint`:
the training index and sampled raw content, no tokenizer), so a recipe exported from the ledger is checked
against the data it is replayed on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LEDGER_DIR = "ledger"
PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("step", pa.int32()),
            ("position", pa.int32()),
            ("sample_id", pa.int64()),
            ("domain", pa.dictionary(pa.int32(), pa.string())),
            ("weight", pa.float32()),
            ("stage", pa.dictionary(pa.int32(), pa.string())),
            ("skipped", pa.bool_()),
        ]
    )


def _parts(folder: Path) -> list[tuple[int, int, Path]]:
    """(first step, last step, path) of every complete part, by first step."""
    if not folder.is_dir():
        return []
    found = [(int(m[1]), int(m[2]), p) for p in folder.iterdir() if (m := PART.match(p.name))]
    return sorted(found)


def read_ledger(run_dir: str | Path):
    """The run's ledger as one pyarrow Table, ordered by (step, position); empty when there is none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, schema=_schema()) for _, _, p in _parts(Path(run_dir) / LEDGER_DIR)]
    if not tables:
        return _schema().empty_table()
    table = pa.concat_tables(tables).unify_dictionaries()
    return table.sort_by([("step", "ascending"), ("position", "ascending")])


def stage_name(stage: str) -> str:
    """The stage without its `key=value` parameter segments: `dynamic_mix:odm:p=0.25` -> `dynamic_mix:odm`."""
    return ":".join(part for part in str(stage).split(":") if "=" not in part)


def default_stage(trainer: Any) -> str:
    """`<trainer kind>[:<component>]` from the classes: StaticTrainer -> static, LossSelector -> loss."""
    kind = re.sub(r"(?<!^)(?=[A-Z])", "_", type(trainer).__name__.removesuffix("Trainer")).lower() or "static"
    cfg: Any = getattr(trainer, "component_config", None)
    target = cfg.get("_target_") if cfg is not None and hasattr(cfg, "get") else None
    if not target:
        return kind
    name = str(target).rsplit(".", 1)[-1]
    name = re.sub(r"(Selector|Mixer|Weighter)$", "", name)
    return f"{kind}:{re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()}"


def _arrow_column(values: np.ndarray, type_: Any) -> Any:
    """One ledger column as a pyarrow array built from numpy buffers. Not `pa.array(...)`, whose first call
    imports pandas (~0.8 s), nor `dictionary_encode()`, whose first call initialises pyarrow's compute
    kernels (~0.7 s): both were paid at the first flush, inside the training loop of every run."""
    import pyarrow as pa

    if pa.types.is_dictionary(type_):
        if any(v is None for v in values):  # nulls: pyarrow's own encoding keeps them null
            return pa.array(list(values), type=type_.value_type).dictionary_encode()
        uniques, first, inverse = np.unique(values.astype(str), return_index=True, return_inverse=True)
        order = np.argsort(first)  # the dictionary in first-occurrence order, as dictionary_encode()
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        indices = _arrow_column(
            rank[inverse.reshape(-1)].astype(_NUMPY_TYPES[str(type_.index_type)]), type_.index_type
        )
        return pa.DictionaryArray.from_arrays(indices, _string_array(uniques[order].tolist()))
    if pa.types.is_boolean(type_):
        bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
        return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(bits)])
    data = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[str(type_)])
    return pa.Array.from_buffers(type_, len(data), [None, pa.py_buffer(data)])


def _string_array(strings: list[str]) -> Any:
    """A pyarrow string array from its offsets and UTF-8 bytes (see `_arrow_column` for why not pa.array)."""
    import pyarrow as pa

    encoded = [x.encode() for x in strings]
    offsets = np.cumsum([0] + [len(b) for b in encoded], dtype=np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(encoded), buffers)


_NUMPY_TYPES = {"int32": np.int32, "int64": np.int64, "float": np.float32}
"""numpy dtype of each fixed-width ledger column type, by its pyarrow name (float32 is `float`)."""


class DataLedger:
    """Appends every trained step's rows; only rank 0 (`enabled`) writes. See the module docstring."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        enabled: bool,
        domain_names: Sequence[str],
        item_domains: np.ndarray | None,
        flush_after: Callable[[int], bool] = lambda done: False,
        flush_every: int = 50,
    ) -> None:
        self.folder = Path(run_dir) / LEDGER_DIR
        self.enabled = enabled
        self.domain_names = list(domain_names)
        self.item_domains = item_domains
        """Domain id of every item (None: streamed data, whose domains come from the step's batch)."""
        self.flush_after = flush_after
        """True after the steps whose rows must be on disk (checkpoint steps)."""
        self.flush_every = flush_every
        """Steps between part files otherwise (bounds the memory the buffer holds)."""
        self._rows: list[dict[str, np.ndarray]] = []

    @classmethod
    def for_loop(cls, loop: Any) -> DataLedger:
        args, data = loop.args, loop.trainer.train_data
        domains = getattr(data, "domain_ids", None)
        engine = getattr(data, "engine", None)
        if loop.is_main and engine is not None and not getattr(engine, "streaming", False):
            from dataflex.mixing.recipe import write_data_identity

            write_data_identity(loop.run_dir, engine)  # ledger/data.json: which data the ids index
        return cls(
            loop.run_dir,
            enabled=loop.is_main,
            domain_names=list(getattr(data, "domain_names", [])),
            item_domains=np.asarray(domains) if domains is not None else None,
            flush_after=lambda done: bool(args.save_steps and done % args.save_steps == 0),
        )

    # ---- writing -----------------------------------------------------------------------------------
    def truncate(self, step: int) -> None:
        """Drops rows of steps after `step` (a resume from checkpoint-`step`; 0: a fresh run, no rows)."""
        self._rows.clear()
        if not self.enabled or not self.folder.is_dir():
            return
        for leftover in self.folder.glob("*.tmp"):
            leftover.unlink()
        last_kept = 0
        for first, last, path in _parts(self.folder):
            if first > step:
                path.unlink()
            elif last > step:
                import pyarrow.compute as pc
                import pyarrow.parquet as pq

                table = pq.read_table(path, schema=_schema())
                self._write(table.filter(pc.less_equal(table["step"], step)), first, step)
                path.unlink()
                last_kept = step
            else:
                last_kept = max(last_kept, last)
        if step and last_kept < step:
            from dataflex.utils.logging import logger

            logger.warning(
                f"the data ledger ends at step {last_kept} but the run resumes after step {step}: rows of "
                f"steps {last_kept + 1}-{step} were not written (the run stopped between its checkpoint and "
                "the ledger's flush); the rest of the ledger is complete."
            )

    def record(self, done: int, ctx: Any, trainer: Any) -> None:
        """The rows of step `done` (call on every rank: streamed data gathers its domains)."""
        ids = np.asarray(ctx.indices, dtype=np.int64)
        if self.item_domains is not None:
            domain_ids = self.item_domains[ids]
        else:
            domain_ids = ctx.gathered()["domain_ids"].numpy()  # collective: every rank is here
        if not self.enabled:
            return
        n = len(ids)
        weights = getattr(trainer, "ledger_weights", lambda ctx: None)(ctx)
        stages = getattr(trainer, "ledger_stages", lambda ctx: None)(ctx)
        if stages is None:
            stages = default_stage(trainer)
        names = np.asarray(self.domain_names + ["?"], dtype=object)
        self._rows.append(
            {
                "step": np.full(n, done, dtype=np.int32),
                "position": np.arange(n, dtype=np.int32),
                "sample_id": ids,
                "domain": names[np.where(domain_ids >= 0, domain_ids, len(self.domain_names))],
                "weight": np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32),
                "stage": np.full(n, stages, dtype=object) if isinstance(stages, str) else np.asarray(stages),
                "skipped": np.full(n, bool(getattr(ctx, "skipped", False))),
            }
        )
        if self.flush_after(done) or len(self._rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not self._rows:
            return
        import pyarrow as pa

        columns = {k: np.concatenate([r[k] for r in self._rows]) for k in self._rows[0]}
        arrays = [_arrow_column(columns[f.name], f.type) for f in _schema()]
        table = pa.Table.from_arrays(arrays, schema=_schema())
        self._write(table, int(self._rows[0]["step"][0]), int(self._rows[-1]["step"][0]))
        self._rows.clear()

    def _write(self, table: Any, first: int, last: int) -> None:
        import pyarrow.parquet as pq

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"part-{first:09d}-{last:09d}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)

    def close(self) -> None:
        self.flush()
