"""`dataflex-run trainer=per_step component=<...>` end to end: composes, trains, logs each step's choice; the
rho_loss reference comes from a trained model's folder; a wrong key fails at compose time."""

from __future__ import annotations

import json

import pytest

from helpers import FAST

pytestmark = pytest.mark.slow


def _rows(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "selection" / "per_step.jsonl").read_text().splitlines()]


def test_greats_and_rho_loss_train_from_the_cli(cli, tmp_path):
    run = tmp_path / "greats"
    cli(
        *FAST,
        "trainer=per_step",
        "component=greats",
        "component.target_domain=target",
        "trainer.candidate_batch_size=8",
        f"trainer.output_dir={run}",
    )
    rows = _rows(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(len(r["candidates"]) == 8 and len(r["kept"]) == 4 for r in rows)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("select/score_mean" in m for m in metrics)
    # rho_loss against the model just trained (its final_model folder: the same tokenizer)
    rho = tmp_path / "rho"
    cli(
        *FAST,
        "trainer=per_step",
        "component=rho_loss",
        f"component.reference_model={run / 'final_model'}",
        f"trainer.output_dir={rho}",
    )
    rows = _rows(rho)
    assert all(len(r["candidates"]) == 8 for r in rows)  # B defaults to twice the global batch
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in rows)


def test_config_errors_name_the_key(cli):
    proc = cli(*FAST, "trainer=per_step", "component=rho_loss", check=False)
    assert proc.returncode != 0 and "component.reference_model" in proc.stdout + proc.stderr
    proc = cli(*FAST, "trainer=per_step", "component=greats", "component.val_size=0", check=False)
    assert proc.returncode != 0 and "component.val_size" in proc.stdout + proc.stderr
