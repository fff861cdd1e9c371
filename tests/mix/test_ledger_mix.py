"""The data ledger of dynamic_mix runs: its ids are exactly the trained ids, each slot's stage carries the
proportion its domain was drawn with, and DoReMi's rows carry the sample's weight in the proxy loss."""

from __future__ import annotations

import numpy as np
import pytest
from mix_helpers import NAMES, mix_trainer, save_reference

from dataflex.data.processor import IGNORE_INDEX
from dataflex.report import ledger_summary
from dataflex.train.ledger import read_ledger
from dataflex.train.loop import TrainingLoop
from dataflex.train.mixer.doremi import DoReMiMixer


@pytest.fixture
def trained(monkeypatch):
    """Sample ids of every micro-batch the model trained on, per 1-based step."""
    seen: dict[int, list[int]] = {}
    original = TrainingLoop._forward

    def record(self, model, mb, ctx):
        seen.setdefault(ctx.step + 1, []).extend(mb["sample_ids"].tolist())
        return original(self, model, mb, ctx)

    monkeypatch.setattr(TrainingLoop, "_forward", record)
    return seen


def _rows(run_dir, step):
    return [r for r in read_ledger(run_dir).to_pylist() if r["step"] == step]


def test_ledger_ids_and_the_proportions_each_step_was_drawn_with(tmp_path, trained):
    """CyclingMixer's k-th call puts all weight on domain k: step 1 is drawn uniformly (p=0.2), step k+1
    entirely from domain k - 1 (p=1), whatever the update at the end of that step decides next."""
    trainer = mix_trainer(
        tmp_path,
        component={"_target_": "mix_helpers.CyclingMixer"},
        warmup_step=1,
        update_step=1,
        update_times=3,
    )
    trainer.train()
    ledger = read_ledger(tmp_path).to_pylist()
    assert [r["sample_id"] for r in ledger] == [i for s in sorted(trained) for i in trained[s]]
    assert len(trained) == 4 and all(r["weight"] == 1.0 for r in ledger)
    assert {r["stage"] for r in _rows(tmp_path, 1)} == {"dynamic_mix:cycling:p=0.2"}
    for step, domain in ((2, "greet"), (3, "arith"), (4, "reverse")):
        rows = _rows(tmp_path, step)
        assert {r["domain"] for r in rows} == {domain}
        assert {r["stage"] for r in rows} == {"dynamic_mix:cycling:p=1"}
    # the report groups by the stage's name, not by every proportion it was drawn with
    summary = ledger_summary(read_ledger(tmp_path), bins=1)
    assert summary["by_stage"] == [{"steps": "1-4", "dynamic_mix:cycling": 32, "total": 32}]


def _supervised_tokens(data, i: int) -> int:
    labels = np.asarray(data[int(i)].labels)
    return int((labels[1:] != IGNORE_INDEX).sum())


@pytest.mark.slow
def test_doremi_rows_weigh_each_sample_by_its_domain_alpha(tmp_path, trained, monkeypatch):
    alphas: dict[int, np.ndarray] = {}
    original = DoReMiMixer.before_backward

    def keep_alpha(self, all_losses, micro_batches, ctx, update):
        original(self, all_losses, micro_batches, ctx, update)
        alphas[ctx.step + 1] = self.alpha.copy()

    monkeypatch.setattr(DoReMiMixer, "before_backward", keep_alpha)
    reference = save_reference(tmp_path / "reference")
    trainer = mix_trainer(
        tmp_path / "run",
        component={
            "_target_": "dataflex.train.mixer.doremi.DoReMiMixer",
            "reference_model_path": str(reference),
            "eta": 5.0,
        },
        warmup_step=0,
        update_step=1,
        update_times=4,
    )
    trainer.train()
    ledger = read_ledger(tmp_path / "run").to_pylist()
    assert [r["sample_id"] for r in ledger] == [i for s in sorted(trained) for i in trained[s]]
    data = trainer.train_data
    moved = False
    for step in sorted(trained):
        rows = _rows(tmp_path / "run", step)
        ids = np.array([r["sample_id"] for r in rows])
        domains = np.asarray(data.domain_ids)[ids]
        tokens = np.array([_supervised_tokens(data, i) for i in ids], dtype=float)
        alpha = alphas[step]
        # alpha_tokens: the proxy loss is sum_j alpha[d(j)] l_j / sum_j alpha[d(j)] over the batch's tokens,
        # so against the plain token mean (1 / T per token) a sample of domain d weighs alpha_d T / sum.
        expected = alpha[domains] * tokens.sum() / (alpha[domains] * tokens).sum()
        got = np.array([r["weight"] for r in rows])
        assert np.allclose(got, expected, rtol=1e-5), step
        assert np.average(got, weights=tokens) == pytest.approx(1.0, rel=1e-5)
        assert [r["domain"] for r in rows] == [NAMES[d] for d in domains]
        moved |= bool(np.ptp(got) > 1e-3)
    assert moved  # eta=5: alpha leaves uniform, so the weights differ between domains
