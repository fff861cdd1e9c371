"""Reads the records of an offline wandb run file (`run-<id>.wandb`) to check what was logged.

The file is a LevelDB-style log (the format wandb documents for its transaction log): a 7-byte header,
then 32 KiB blocks of chunks, each `<crc32:uint32><length:uint16><type:uint8>` + payload; FULL chunks
hold one record, FIRST/MIDDLE/LAST chunks are concatenated. Each record is a `wandb.proto` Record.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes):
    assert data[:4] == b":W&B", "not a wandb run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            pos += left_in_block  # zero padding to the end of the block
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk


def read_records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    for payload in _payloads(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


def wait_until_written(path: Path, timeout: float = 30.0) -> Path:
    """wandb's service process writes the file asynchronously; its last record is `exit`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kinds = [r.WhichOneof("record_type") for r in read_records(path)]
        except Exception:  # noqa: BLE001 - a partly written chunk; read again
            kinds = []
        if "exit" in kinds or time.monotonic() > deadline:
            return Path(path)
        time.sleep(0.2)


def history_rows(path: Path) -> list[dict]:
    """Each `run.log` call as {key: decoded JSON value}."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def run_record(path: Path):
    return next(r.run for r in read_records(path) if r.WhichOneof("record_type") == "run")


def config_of(run) -> dict:
    return {item.key: json.loads(item.value_json) for item in run.config.update}


def metric_records(path: Path):
    return [r.metric for r in read_records(path) if r.WhichOneof("record_type") == "metric"]
