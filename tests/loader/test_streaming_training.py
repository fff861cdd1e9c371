"""`static` and `dynamic_mix` train from streaming domains (local .jsonl line readers and a parquet file
through `datasets` streaming, the code path of hub datasets with `streaming: true`): read lazily in file
order, one reader per domain, domains drawn by the current proportions, a short domain starting its next pass;
a SIGKILLed streaming run resumed from its checkpoint equals an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dataflex.data.stream_training import DomainReader
from dataflex.run import run

TINY = (
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
    "trainer.per_device_train_batch_size=2",
    "trainer.gradient_accumulation_steps=2",
    "trainer.logging_steps=1",
    "trainer.eval_steps=0",
    "trainer.disable_tqdm=true",
    "trainer.eval_on_start=false",
    "data.cutoff_len=64",
)
ROWS = {"web": 40, "code": 40, "tiny": 5}


def write_streams(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    info = ""
    for name, n in ROWS.items():
        rows = [{"text": f"{name} document {i} " + "word " * (i % 7)} for i in range(n)]
        if name == "code":  # parquet streams through `datasets` (the hub datasets' code path)
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
            info += f"{name}:\n  path: {name}.parquet\n  streaming: true\n"
            continue
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        info += f"{name}:\n  path: {name}.jsonl\n  streaming: true\n"
    (folder / "dataset_info.yaml").write_text(info)
    return folder


@pytest.fixture
def reads(monkeypatch):
    """Every sample the domain readers handed out: (domain, text)."""
    log: list[tuple[str, str]] = []
    original = DomainReader.next_sample

    def record(self):
        sample = original(self)
        log.append((self.domain, sample["messages"][-1]["content"][0]["value"]))
        return sample

    monkeypatch.setattr(DomainReader, "next_sample", record)
    return log


@pytest.mark.parametrize(
    "trainer",
    [
        ("trainer=static", "trainer.max_steps=8"),
        (
            "trainer=dynamic_mix",
            "component=random",
            "trainer.warmup_step=2",
            "trainer.update_step=3",
            "trainer.update_times=2",
        ),
    ],
)
def test_training_reads_each_domain_lazily_in_order(compose, tmp_path, reads, trainer):
    data = write_streams(tmp_path / "data")
    run_dir = tmp_path / "run"
    run(compose(*trainer, *TINY, f"data.dataset={data}", "trainer.save_final_model=false"), run_dir)
    assert len(reads) == 8 * 4  # exactly the trained slots, nothing read ahead of the plan
    for name, n in ROWS.items():
        texts = [t for d, t in reads if d == name]
        order = [int(t.split()[2]) for t in texts]
        assert order == [i % n for i in range(len(order))]  # file order; `tiny` (5 rows) starts its next pass
    if trainer[0] == "trainer=dynamic_mix":
        history = json.loads((run_dir / "mixture_history.json").read_text())
        counts = np.asarray(history["trained_counts"])  # per step, per domain
        plan_starts = [u["step"] for u in history["updates"]]
        for start, end in zip(plan_starts, plan_starts[1:] + [len(counts)]):
            p = np.asarray(next(u["proportions"] for u in history["updates"] if u["step"] == start))
            cum = np.cumsum(counts[start:end], axis=0)
            assert np.all(np.abs(cum - np.outer(np.arange(1, end - start + 1) * 4, p)) <= 1 + 1e-9)
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss" in m for m in metrics) == 8


def test_streaming_refuses_what_a_stream_cannot_do(compose, tmp_path):
    data = write_streams(tmp_path / "data")
    with pytest.raises(ValueError, match="trainer.max_steps"):
        run(compose("trainer=static", "trainer.max_steps=0", *TINY, f"data.dataset={data}"), tmp_path / "a")
    with pytest.raises(ValueError, match="mixture_unit=tokens is not supported when training from streams"):
        run(
            compose("trainer=dynamic_mix", "trainer.mixture_unit=tokens", *TINY, f"data.dataset={data}"),
            tmp_path / "b",
        )


STREAM_RUN = (
    "trainer=dynamic_mix",
    "component=odm",
    "trainer.warmup_step=2",
    "trainer.update_step=2",
    "trainer.update_times=3",
    "trainer.save_steps=3",
    "trainer.learning_rate=1e-2",
    *TINY,
)


def _decisions(run_dir: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if k.startswith(("mixture/", "loss", "train/loss"))} | {"step": r["step"]}
        for r in recs
    ]


@pytest.mark.slow
def test_killed_streaming_mix_with_loader_workers_resumes_to_the_uninterrupted_run(cli, tmp_path):
    """With 2 DataLoader workers prefetching from the streams (the loop without workers is killed and resumed
    in the 2-rank test below)."""
    data = write_streams(tmp_path / "data")
    args = (*STREAM_RUN, f"data.dataset={data}", "trainer.dataloader_num_workers=2")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    cli(*args, f"trainer.output_dir={ref}")
    killed = cli(*args, f"trainer.output_dir={cut}", check=False, fault="step:5")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (cut / "checkpoint-3" / "data_state_0.json").is_file()
    cli(*args, f"trainer.output_dir={cut}", "trainer.resume_from_checkpoint=auto")
    a, b = (
        load_file(ref / "final_model" / "model.safetensors"),
        load_file(cut / "final_model" / "model.safetensors"),
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ref_d, cut_d = _decisions(ref), _decisions(cut)
    assert [r["step"] for r in ref_d] == [r["step"] for r in cut_d]
    for x, y in zip(ref_d, cut_d):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7), (x["step"], key)
    assert json.loads((ref / "mixture_history.json").read_text()) == json.loads(
        (cut / "mixture_history.json").read_text()
    )


@pytest.mark.slow
def test_two_ranks_read_disjoint_shards_and_a_killed_run_resumes_exactly(cli, tmp_path):
    """`launcher.nproc_per_node=2`: each rank reads only its slots of every batch from its own shard of each
    domain, keeps its own positions in the checkpoint, and a SIGKILLed run resumed from it equals an
    uninterrupted one (weights, mixture decisions, losses)."""
    data = write_streams(tmp_path / "data")
    args = (*STREAM_RUN, f"data.dataset={data}", "launcher.nproc_per_node=2")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    cli(*args, f"trainer.output_dir={ref}", timeout=600)
    killed = cli(*args, f"trainer.output_dir={cut}", check=False, fault="step:5", timeout=600)
    assert killed.returncode != 0 and not (cut / "final_model").exists(), killed.stderr[-2000:]
    states = [json.loads((cut / "checkpoint-3" / f"data_state_{r}.json").read_text()) for r in (0, 1)]
    assert [(s["rank"], s["world"]) for s in states] == [(0, 2), (1, 2)]
    # 3 steps x 2 ranks x 2 rows x 2 accumulation slots: each rank read exactly its half, no slot twice
    reads = [sum(r["read"] for r in s["readers"]) for s in states]
    assert reads == [3 * 2 * 2, 3 * 2 * 2]
    cli(*args, f"trainer.output_dir={cut}", "trainer.resume_from_checkpoint=auto", timeout=600)
    a, b = (
        load_file(ref / "final_model" / "model.safetensors"),
        load_file(cut / "final_model" / "model.safetensors"),
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ref_d, cut_d = _decisions(ref), _decisions(cut)
    assert [r["step"] for r in ref_d] == [r["step"] for r in cut_d]
    for x, y in zip(ref_d, cut_d):
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7), (x["step"], key)
    assert json.loads((ref / "mixture_history.json").read_text()) == json.loads(
        (cut / "mixture_history.json").read_text()
    )
