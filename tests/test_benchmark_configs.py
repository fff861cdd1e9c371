"""The vs_dataflex benchmark's jobs (the DataFlex 1.1 peer's runs as dataflex-run overrides) still compose and
validate, so the harness does not rot when a config key changes."""

from __future__ import annotations

import importlib.util
import json

import pytest

from dataflex.run import validate

from helpers import REPO


def _bench():
    path = REPO / "experiments" / "benchmarks" / "vs_dataflex" / "bench.py"
    spec = importlib.util.spec_from_file_location("vs_dataflex_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()


@pytest.mark.parametrize("job", sorted(BENCH.JOBS))
def test_every_vs_dataflex_job_composes_and_validates(compose, job, tmp_path):
    _, ours = BENCH.JOBS[job]
    for folder in (tmp_path / "peer" / "tiny_model", tmp_path / "ours" / "static_full" / "final_model"):
        folder.mkdir(parents=True)  # where the peer's model and our doremi reference live in a real run
        (folder / "config.json").write_text("{}")
        (folder / "tokenizer_config.json").write_text("{}")  # validation checks tokenizer files exist
    data = tmp_path / "peer" / "data"  # the peer's LLaMA-Factory dataset_info.json layout (make_data.py)
    data.mkdir()
    names = ("arith", "revstr", "upper", "eval_mix")
    (data / "dataset_info.json").write_text(json.dumps({n: {"file_name": f"{n}.json"} for n in names}))
    for n in names:
        (data / f"{n}.json").write_text(
            json.dumps([{"instruction": "Add.", "input": "1 + 2", "output": "3"}] * 8)
        )
    overrides = [o.format(peer=tmp_path / "peer", ours=tmp_path / "ours") for o in BENCH.COMMON + ours]
    cfg = compose(*overrides)
    validate(cfg)
    assert cfg.trainer.per_device_train_batch_size == 4 and cfg.data.cutoff_len == 128
    assert cfg.model.finetuning_type in ("lora", "full") and cfg.model.lora_rank == 8
