"""DataEngine benchmark (issue 3): index build, random-access `__getitem__`, streaming vs `datasets`.

Run from the repository root (the README gives the exact command and the measured table)::

    python experiments/benchmarks/data_engine/bench_data_engine.py

Generated inputs go to a temporary folder under /tmp (removed at the end, never committed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS_SPEC = [  # (rows in the dataset, size, weight): 10M rows in, 10M index entries out
    (4_000_000, 3_000_000, None),  # shrink: 3M of 4M rows, without replacement
    (2_000_000, None, 1.5),  # weight: 1 full pass + 1M
    (2_000_000, 2_500_000, None),  # grow: 1 full pass + 0.5M
    (1_000_000, None, 0.5),  # half
    (1_000_000, 1_000_000, 1.0),  # size and weight
]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_index(seed: int = 0) -> dict:
    """Runs in a fresh process (see `main`): time, tracemalloc peak, and peak RSS growth of the build."""
    import tracemalloc

    import numpy as np

    from dataflex.data.plugins.index import build_index

    lengths = [r[0] for r in ROWS_SPEC]
    sizes = [r[1] for r in ROWS_SPEC]
    weights = [r[2] for r in ROWS_SPEC]
    names = [f"ds{k}" for k in range(len(ROWS_SPEC))]
    build_index(lengths[:1], sizes[:1], weights[:1], [0], names[:1], names[:1], seed=seed)  # warm-up
    rss_before = _rss_mb()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for rep in range(3):
        t0 = time.perf_counter()
        idx = build_index(lengths, sizes, weights, list(range(5)), names, names, seed=seed, epoch=rep)
        times.append(time.perf_counter() - t0)
        if rep < 2:
            del idx
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del idx
    tracemalloc.start()
    idx = build_index(lengths, sizes, weights, list(range(5)), names, names, seed=seed)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    counts = np.bincount(idx.dataset_ids).tolist()
    return {
        "entries": len(idx),
        "per_dataset": counts,
        "best_s": min(times),
        "mean_s": sum(times) / len(times),
        "tracemalloc_peak_mb": peak / 2**20,
        "rss_growth_mb": max(maxrss_after - maxrss_before, 0.0),
        "rss_before_mb": rss_before,
        "final_arrays_mb": (idx.dataset_ids.nbytes + idx.row_ids.nbytes + idx.domain_ids.nbytes) / 2**20,
    }


def bench_getitem(tmp: Path, n: int = 50_000) -> dict:
    import numpy as np

    from dataflex.data import DataArguments, DataEngine

    out = {}
    e = DataEngine(DataArguments())  # embedded default: 10k alpaca rows from jsonl
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(e), n)
    t0 = time.perf_counter()
    for i in idx:
        e[int(i)]
    out["embedded_jsonl_int"] = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in range(0, n, 64):
        e[idx[k : k + 64]]
    out["embedded_jsonl_batch64"] = n / (time.perf_counter() - t0)

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 500_000
    table = pa.table(
        {
            "instruction": [f"Add the numbers {i}." for i in range(rows)],
            "input": [f"{i % 97} + {i % 89}" for i in range(rows)],
            "output": [str(i % 97 + i % 89) for i in range(rows)],
        }
    )
    pq.write_table(table, tmp / "big.parquet")
    t0 = time.perf_counter()
    p = DataEngine(DataArguments(dataset=str(tmp / "big.parquet")))
    out["parquet_500k_build_s"] = time.perf_counter() - t0
    m = n // 5
    idx = rng.integers(0, len(p), m)
    t0 = time.perf_counter()
    for i in idx:
        p[int(i)]
    out["parquet_500k_int"] = m / (time.perf_counter() - t0)
    return out


def make_jsonl(path: Path, gb: float) -> int:
    """Alpaca-style rows with varied lengths until the file reaches `gb` GiB."""
    rnd = random.Random(0)
    words = [f"w{k}" for k in range(5000)]
    target, written, n = int(gb * 2**30), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            lines = []
            for _ in range(10_000):
                row = {
                    "instruction": " ".join(rnd.choices(words, k=rnd.randint(5, 30))),
                    "input": " ".join(rnd.choices(words, k=rnd.randint(0, 20))),
                    "output": " ".join(rnd.choices(words, k=rnd.randint(5, 40))),
                }
                lines.append(json.dumps(row))
            chunk = "\n".join(lines) + "\n"
            f.write(chunk)
            written += len(chunk)
            n += len(lines)
    return n


def bench_streaming(tmp: Path, gb: float) -> dict:
    import datasets

    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.plugins.loader import LoadContext, _json_row
    from dataflex.data.streaming import LineStream

    path = tmp / "stream.jsonl"
    t0 = time.perf_counter()
    rows = make_jsonl(path, gb)
    out = {"file_gib": path.stat().st_size / 2**30, "rows": rows, "generate_s": time.perf_counter() - t0}

    def timed(key: str, it) -> None:
        """Wall time and process CPU time (all threads): CPU time is robust to other load on the box."""
        w0, c0 = time.perf_counter(), time.process_time()
        n = sum(1 for _ in it)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        assert n == rows, (key, n, rows)
        out[key] = {"wall_s": wall, "cpu_s": cpu, "per_s_wall": n / wall, "per_s_cpu": n / cpu}

    timed("dataflex_rows", LineStream(path, 0, 1, LoadContext("bench"), _json_row))
    timed("dataflex_samples", DataEngine(DataArguments(dataset=str(path), streaming=True)))
    timed("datasets_rows", datasets.load_dataset("json", data_files=str(path), split="train", streaming=True))
    for k in ("wall", "cpu"):
        out[f"ratio_rows_{k}"] = out["dataflex_rows"][f"per_s_{k}"] / out["datasets_rows"][f"per_s_{k}"]
        out[f"ratio_samples_{k}"] = out["dataflex_samples"][f"per_s_{k}"] / out["datasets_rows"][f"per_s_{k}"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stream-gb", type=float, default=1.0, help="size of the generated jsonl (GiB)")
    ap.add_argument("--skip-streaming", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    ap.add_argument("--index-only", action="store_true", help=argparse.SUPPRESS)  # child process mode
    args = ap.parse_args()
    if args.index_only:
        print(json.dumps(bench_index()))
        return

    results: dict = {"loadavg_start": os.getloadavg()[0]}
    print(f"load average at the start: {results['loadavg_start']:.2f}")
    child = subprocess.run(
        [sys.executable, __file__, "--index-only"], capture_output=True, text=True, check=True
    )
    results["index"] = json.loads(child.stdout.strip().splitlines()[-1])
    tmp = Path(tempfile.mkdtemp(prefix="dataflex-bench-", dir="/tmp"))
    try:
        results["getitem"] = bench_getitem(tmp)
        if not args.skip_streaming:
            results["streaming"] = bench_streaming(tmp, args.stream_gb)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ix, gi = results["index"], results["getitem"]
    print("| measurement | result |\n|---|---|")
    print(
        f"| index build, {ix['entries']:,} entries from 10M rows / 5 datasets (best of 3) | "
        f"{ix['best_s']:.3f} s "
        f"(mean {ix['mean_s']:.3f} s) |"
    )
    print(
        "| index build peak memory: tracemalloc / RSS growth / final arrays | "
        f"{ix['tracemalloc_peak_mb']:.0f} MB / "
        f"{ix['rss_growth_mb']:.0f} MB / {ix['final_arrays_mb']:.0f} MB |"
    )
    print(
        "| `engine[i]` random, embedded default (jsonl in memory) | "
        f"{gi['embedded_jsonl_int']:,.0f} samples/s |"
    )
    print(
        f"| `engine[idx]` batches of 64, embedded default | {gi['embedded_jsonl_batch64']:,.0f} samples/s |"
    )
    print(
        f"| `DataEngine` build on a 500k-row parquet (load + convert-check every row + index) | "
        f"{gi['parquet_500k_build_s']:.2f} s |"
    )
    print(
        "| `engine[i]` random, 500k-row parquet (memory-mapped Arrow) | "
        f"{gi['parquet_500k_int']:,.0f} samples/s |"
    )
    if "streaming" in results:
        st = results["streaming"]

        def row(label: str, key: str) -> None:
            r = st[key]
            print(
                f"| {label} | {r['per_s_wall']:,.0f}/s wall ({r['wall_s']:.1f} s); "
                f"{r['per_s_cpu']:,.0f}/s CPU "
                f"({r['cpu_s']:.1f} s) |"
            )

        row(
            f"streaming {st['file_gib']:.2f} GiB jsonl ({st['rows']:,} rows): DataFlex reader, raw rows",
            "dataflex_rows",
        )
        row("same file: DataFlex streaming engine, converted samples", "dataflex_samples")
        row(
            "same file: `datasets` streaming (`load_dataset('json', streaming=True)`), raw rows",
            "datasets_rows",
        )
        print(
            "| ratio DataFlex / `datasets`: raw rows; converted samples vs raw rows | "
            f"wall {st['ratio_rows_wall']:.2f}x; {st['ratio_samples_wall']:.2f}x — "
            f"CPU {st['ratio_rows_cpu']:.2f}x; {st['ratio_samples_cpu']:.2f}x |"
        )
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (2 cores)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
