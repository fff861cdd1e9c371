"""data_scale benchmark (issue 12a): the token store at 25M / 125M pretrain tokens and 100k SFT rows.

Measures, side by side in one run on the same machine (see README.md for the command and the table):
  (a) cold store build vs the batched fast tokenizer call on the same texts and cores,
  (b) peak RSS of a 3-step `dataflex-run` (warm store) on the small vs the large corpus,
  (c) warm start: the data start-up alone (`startup`) and the whole warm 3-step run (`c_run`) on the large
      corpus over the same on a tiny corpus, alternating,
  (d) steps/s on the embedded default vs a checkout of the pre-store main (`--base`).
Every run is a fresh subprocess; corpora are generated under --work (never committed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "HYDRA_FULL_ERROR": "1",
}
RUN = [
    "trainer.max_steps=3",
    "trainer.eval_steps=0",
    "trainer.logging_steps=1",
    "trainer.disable_tqdm=true",
    "trainer.save_final_model=false",
]


# ------------------------------------------------------------------------------------------ corpora
def generate_pretrain(folder: Path, tokens: float, seed: int = 0) -> Path:
    """3 domains of generated text (parquet, `text` column), ~830 tokens per document as in the issue."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataflex.models.tiny import load_tokenizer

    info = folder / "dataset_info.yaml"
    if info.exists():
        return info
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    tok = load_tokenizer()
    domains = {}
    for name in ("web", "code", "books"):
        words = ["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(4000)]
        domains[name] = np.array(words)
    probe = [" ".join(rng.choice(domains["web"], 200)) for _ in range(20)]
    per_word = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in probe) / (20 * 200)
    words_per_doc = int(830 / per_word)
    docs_per_domain = int(tokens / 830 / 3) + 1
    for name, vocab in domains.items():
        rows = []
        for start in range(0, docs_per_domain, 2000):
            n = min(2000, docs_per_domain - start)
            idx = rng.zipf(1.3, size=(n, words_per_doc)) % len(vocab)
            rows.extend(" ".join(vocab[r]) for r in idx)
        pq.write_table(pa.table({"text": rows}), folder / f"{name}.parquet")
        del rows
    info.write_text("".join(f"{n}:\n  path: {n}.parquet\n  converter: text\n" for n in domains))
    return info


def generate_sft(folder: Path, rows: int, seed: int = 0) -> Path:
    """3 domains of alpaca rows (parquet)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = folder / "dataset_info.yaml"
    if info.exists():
        return info
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = np.array(
        ["".join(rng.choice(list("abcdefghijklmnop"), size=rng.integers(2, 8))) for _ in range(3000)]
    )
    for name in ("qa", "math", "chat"):
        n = rows // 3 + 1
        ins = [" ".join(vocab[rng.integers(0, 3000, rng.integers(5, 30))]) for _ in range(n)]
        out = [" ".join(vocab[rng.integers(0, 3000, rng.integers(10, 60))]) for _ in range(n)]
        pq.write_table(
            pa.table({"instruction": ins, "input": [""] * n, "output": out}), folder / f"{name}.parquet"
        )
    info.write_text(
        "".join(f"{n}:\n  path: {n}.parquet\n  converter: alpaca\n" for n in ("qa", "math", "chat"))
    )
    return info


# --------------------------------------------------------------------------- in-subprocess measurements
def child_build(info: str, cache: str, mode: str, cutoff: int) -> None:
    """Times the store build alone (engine loaded first, outside the timer)."""
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData
    from dataflex.data.token_store import StoreSettings
    from dataflex.models.tiny import load_tokenizer

    engine = DataEngine(DataArguments(dataset=info, mode=mode, cutoff_len=cutoff))
    tok = load_tokenizer()
    start, cpu = time.perf_counter(), _cpu()
    data = TokenizedData(engine, tok, cutoff, mode=mode, store=StoreSettings(cache_dir=cache, rebuild=True))
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "cpu_seconds": _cpu() - cpu,
                "tokens": int(len(data.store.tokens)),
            }
        )
    )


def _cpu() -> float:
    """CPU seconds of this process (all threads) and its finished children (the map workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def child_startup(info: str, cache: str, mode: str, cutoff: int) -> None:
    """Data start-up of a warm run alone: DataEngine + TokenizedData on an existing store, one batch read."""
    import resource

    start, cpu = time.perf_counter(), _cpu()
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData, collate
    from dataflex.data.token_store import StoreSettings
    from dataflex.models.tiny import load_tokenizer

    engine = DataEngine(DataArguments(dataset=info, mode=mode, cutoff_len=cutoff))
    tok = load_tokenizer()
    data = TokenizedData(engine, tok, cutoff, mode=mode, store=StoreSettings(cache_dir=cache))
    collate([data[i] for i in range(0, len(data), max(1, len(data) // 8))], tok.pad_token_id)
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "cpu_seconds": _cpu() - cpu,
                "items": len(data),
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def child_datapath(cache: str) -> None:
    """(d') CPU ms per step of the data path on the embedded default: 8 items + collate, 60 random batches,
    today's in-process tokenization (first access, then cached) vs the token store."""
    import numpy as np

    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData, collate
    from dataflex.data.token_store import StoreSettings
    from dataflex.models.tiny import load_tokenizer

    tok, engine = load_tokenizer(), DataEngine(DataArguments())
    today = TokenizedData(engine, tok, 128)
    store = TokenizedData(engine, tok, 128, store=StoreSettings(cache_dir=cache))
    batches = np.random.default_rng(0).permutation(len(today))[:480].reshape(60, 8)
    out = {}
    for name, data in (
        ("today_first_access", today),
        ("store", store),
        ("today_cached", today),
        ("store_again", store),
    ):
        start = time.process_time()
        for b in batches:
            collate([data[i] for i in b], tok.pad_token_id)
        out[name] = (time.process_time() - start) / 60 * 1000
    print(json.dumps(out))


def child_tokenize(info: str, mode: str) -> None:
    """The batched fast tokenizer call alone on the same texts (pretrain: each document's text; SFT: each
    message's text), both cores (TOKENIZERS_PARALLELISM=true)."""
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import message_text
    from dataflex.models.tiny import load_tokenizer

    engine = DataEngine(DataArguments(dataset=info, mode=mode))
    texts = []
    for i in range(len(engine)):
        msgs = engine[i]["messages"]
        texts.extend(
            [" ".join(message_text(m) for m in msgs)]
            if mode == "pretrain"
            else [message_text(m) for m in msgs]
        )
    tok = load_tokenizer()
    call = (
        (lambda b: [e.ids for e in tok.backend_tokenizer.encode_batch_fast(b, add_special_tokens=False)])
        if os.environ.get("BENCH_TOKENIZER") == "backend_fast"  # the floor: what the build itself calls
        else (lambda b: tok(b, add_special_tokens=False)["input_ids"])  # the batched HF call (the target's)
    )
    start, cpu = time.perf_counter(), _cpu()
    n = 0
    for s in range(0, len(texts), 1000):
        n += sum(len(x) for x in call(texts[s : s + 1000]))
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": _cpu() - cpu, "tokens": n}))


# ----------------------------------------------------------------------------------------- drivers
def _child(*args: str, env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args],
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _dataflex_run(pythonpath: Path, overrides: list[str], out: Path) -> dict:
    """A `dataflex-run` in a fresh process under /usr/bin/time: wall seconds, peak RSS, samples/s."""
    cmd = [
        "/usr/bin/time",
        "-f",
        "TIME %e %M %U %S",
        sys.executable,
        "-m",
        "dataflex.cli",
        *overrides,
        f"trainer.output_dir={out}",
        "trainer.overwrite_output_dir=true",
    ]
    proc = subprocess.run(
        cmd, env={**ENV, "PYTHONPATH": str(pythonpath)}, capture_output=True, text=True, cwd="/tmp"
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = [x for x in proc.stderr.splitlines() if x.startswith("TIME ")][-1]
    wall, rss_kb, user, system = line.split()[1:]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [m["samples_per_s"] for m in metrics if "samples_per_s" in m]
    return {
        "wall": float(wall),
        "cpu": float(user) + float(system),
        "rss_mb": int(rss_kb) / 1024,
        "samples_per_s": rates,
    }


def _build_vs_tokenizer(info: str, cache: str, mode: str, cutoff: str, repeats: int) -> dict:
    """Cold builds and tokenizer calls alternating (build, call, call, build, ...), medians of wall and CPU
    seconds and their ratios (CPU seconds: the figure that does not depend on other jobs' load)."""
    builds, calls = [], []
    for r in range(repeats):
        for kind in ("build", "tokenize") if r % 2 == 0 else ("tokenize", "build"):
            if kind == "build":
                env = {"TOKENIZERS_PARALLELISM": "false"}
                builds.append(_child("build", info, cache, mode, cutoff, env=env))
            else:
                calls.append(_child("tokenize", info, mode, env={"TOKENIZERS_PARALLELISM": "true"}))
    med = {
        f"{who}_{k}": statistics.median(x[k] for x in runs)
        for who, runs in (("build", builds), ("tokenizer", calls))
        for k in ("seconds", "cpu_seconds")
    }
    return {
        "builds": builds,
        "tokenizer_calls": calls,
        **med,
        "ratio": med["build_seconds"] / med["tokenizer_seconds"],
        "cpu_ratio": med["build_cpu_seconds"] / med["tokenizer_cpu_seconds"],
        "load_avg": os.getloadavg(),
    }


def _warm_runs(infos: dict[str, Path], pre: list[str], runs_dir: Path, repeats: int) -> dict:
    """Whole 3-step `dataflex-run`s on warm stores (one untimed run each builds or checks them), the
    corpora alternating run by run; medians of wall seconds (process start to exit), CPU seconds, peak RSS."""
    names = list(infos)
    for name in names:
        _dataflex_run(REPO, [*pre, f"data.dataset={infos[name]}", *RUN], runs_dir / f"c_warmup_{name}")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            run = _dataflex_run(REPO, [*pre, f"data.dataset={infos[name]}", *RUN], runs_dir / f"c_{name}{r}")
            runs[name].append({k: run[k] for k in ("wall", "cpu", "rss_mb")})
    med = {n: {k: statistics.median(x[k] for x in runs[n]) for k in ("wall", "cpu", "rss_mb")} for n in names}
    first, last = names
    return {
        "runs": runs,
        "median": med,
        "extra_wall": med[last]["wall"] - med[first]["wall"],
        "extra_cpu": med[last]["cpu"] - med[first]["cpu"],
        "load_avg": os.getloadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", default="/tmp/data_scale")
    p.add_argument("--tokens", default="25e6,125e6", help="small,large pretrain corpus sizes")
    p.add_argument("--sft-rows", default="100000")
    p.add_argument("--base", default="/tmp/base_store", help="checkout of the pre-store main (00a941c)")
    p.add_argument("--steps-repeats", type=int, default=2)
    p.add_argument("--build-repeats", type=int, default=3, help="(a)/SFT: builds and calls, alternating")
    p.add_argument("--corpora", default="small,large", help="which pretrain corpora parts a and b run on")
    p.add_argument("--skip", default="", help="comma list of parts to skip: a,b,base_b,c,c_run,d,sft")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    work, skip = Path(a.work), set(a.skip.split(","))
    small, large = (float(x) for x in a.tokens.split(","))
    results: dict = {"load_avg_start": os.getloadavg()}
    tiny_info = generate_pretrain(work / "tiny", 0.3e6)
    infos = {
        "small": generate_pretrain(work / f"pt_{small:.0e}", small),
        "large": generate_pretrain(work / f"pt_{large:.0e}", large),
    }
    infos = {k: v for k, v in infos.items() if k in a.corpora.split(",")}
    cache = str(work / "cache")
    pre = ["data=custom", "data.mode=pretrain", "data.cutoff_len=256", f"data.cache_dir={cache}"]
    if "a" not in skip:  # cold build vs the tokenizer call, alternating
        for size, info in infos.items():
            results[f"a_{size}"] = _build_vs_tokenizer(str(info), cache, "pretrain", "256", a.build_repeats)
            print(size, results[f"a_{size}"], flush=True)
    if "b" not in skip:  # warm runs: tiny, small, large (stores built above or on the first run here)
        for name, info in ((("tiny", tiny_info),) if "tiny" not in skip else ()) + tuple(infos.items()):
            _dataflex_run(REPO, [*pre, f"data.dataset={info}", *RUN], work / "runs" / f"warmup_{name}")
            results[f"b_{name}"] = _dataflex_run(
                REPO, [*pre, f"data.dataset={info}", *RUN], work / "runs" / name
            )
            print(name, results[f"b_{name}"], flush=True)
        if Path(a.base).is_dir() and "base_b" not in skip:
            for name in [n for n in ("tiny", "small") if n not in skip and (n == "tiny" or n in infos)]:
                info = tiny_info if name == "tiny" else infos["small"]
                results[f"b_base_{name}"] = _dataflex_run(
                    Path(a.base), [*pre[:-1], f"data.dataset={info}", *RUN], work / "runs" / f"base_{name}"
                )
                print("base", name, results[f"b_base_{name}"], flush=True)
    if "c" not in skip:  # warm data start-up alone: tiny vs the large corpus, alternating, medians
        runs: dict[str, list[dict]] = {"tiny": [], "large": []}
        pairs = [("tiny", tiny_info), ("large", infos.get("large"))]
        if pairs[1][1] is not None:
            for _, info in pairs:  # make sure both stores exist (not timed)
                _child("startup", str(info), cache, "pretrain", "256")
            for r in range(a.build_repeats):
                for name, info in pairs if r % 2 == 0 else pairs[::-1]:
                    runs[name].append(_child("startup", str(info), cache, "pretrain", "256"))
            med = {
                n: {k: statistics.median(x[k] for x in runs[n]) for k in ("seconds", "cpu_seconds")}
                for n in runs
            }
            results["c"] = {
                "runs": runs,
                "median": med,
                "extra_seconds": med["large"]["seconds"] - med["tiny"]["seconds"],
                "extra_cpu_seconds": med["large"]["cpu_seconds"] - med["tiny"]["cpu_seconds"],
                "load_avg": os.getloadavg(),
            }
            print("c", results["c"], flush=True)
    if (
        "c_run" not in skip and "large" in infos
    ):  # (c) end to end: warm 3-step runs, tiny vs large, alternating
        results["c_run"] = _warm_runs(
            {"tiny": tiny_info, "large": infos["large"]}, pre, work / "runs", a.build_repeats
        )
        print("c_run", results["c_run"], flush=True)
    if "d" not in skip and Path(a.base).is_dir():  # steps/s on the embedded default, alternating trees
        steps = [
            "trainer.max_steps=60",
            "trainer.logging_steps=10",
            "trainer.eval_steps=0",
            "trainer.disable_tqdm=true",
            "trainer.save_final_model=false",
        ]
        ours, base = [], []
        _dataflex_run(REPO, [f"data.cache_dir={cache}", *steps], work / "runs" / "d_warm")
        for r in range(a.steps_repeats):
            ours += _dataflex_run(REPO, [f"data.cache_dir={cache}", *steps], work / "runs" / f"d_ours{r}")[
                "samples_per_s"
            ][1:]
            base += _dataflex_run(Path(a.base), steps, work / "runs" / f"d_base{r}")["samples_per_s"][1:]
        results["d"] = {
            "ours": statistics.median(ours),
            "base": statistics.median(base),
            "ratio": statistics.median(ours) / statistics.median(base),
        }
        print("d", results["d"], flush=True)
    if "sft" not in skip:
        for rows in (int(x) for x in a.sft_rows.split(",")):
            info = generate_sft(work / f"sft_{rows}", rows)
            results[f"sft_{rows}"] = _build_vs_tokenizer(str(info), cache, "sft", "1024", a.build_repeats)
            print("sft", rows, results[f"sft_{rows}"], flush=True)
    results["load_avg_end"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "build":
        child_build(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "startup":
        child_startup(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "datapath":
        child_datapath(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "tokenize":
        child_tokenize(sys.argv[2], sys.argv[3])
    else:
        main()
