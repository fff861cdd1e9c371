"""`trainer.mixture_unit=tokens`: proportions are shares of the trained tokens, met within one sample per
domain at every step; `max_repetitions` bounds a domain's use and an infeasible mixture fails before
training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataflex.data.errors import MixtureInfeasible
from dataflex.data.sampling import ProportionSampler
from dataflex.run import run

TINY = (
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
    "trainer.per_device_train_batch_size=4",
    "trainer.logging_steps=1",
    "trainer.eval_steps=0",
    "trainer.disable_tqdm=true",
    "trainer.save_final_model=false",
    "trainer.eval_on_start=false",
)


def _check_bound(tokens_by_domain: np.ndarray, p: np.ndarray, max_len: np.ndarray) -> None:
    """Ahead of its target by less than one of its samples; behind by less than one sample of each other."""
    total = tokens_by_domain.sum()
    gap = tokens_by_domain - p * total
    others = max_len.sum() - max_len
    assert np.all(gap < max_len + 1e-9), (gap, max_len)
    assert np.all(-gap < others + 1e-9), (gap, others)


@pytest.mark.parametrize("seed", range(4))
def test_token_sampler_meets_proportions_within_one_sample_per_domain(seed):
    rng = np.random.default_rng(seed)
    k = 4
    sizes = rng.integers(20, 60, size=k)
    rows = np.split(np.arange(sizes.sum()), np.cumsum(sizes)[:-1])
    lengths = np.concatenate([rng.integers(lo, lo * 8, size=n) for lo, n in zip((2, 10, 40, 5), sizes)])
    p = rng.dirichlet(np.ones(k))
    sampler = ProportionSampler(rows, p, seed=seed, unit="tokens", item_tokens=lengths)
    domain_of = np.repeat(np.arange(k), sizes)
    max_len = np.asarray([lengths[r].max() for r in rows], dtype=float)
    tokens = np.zeros(k)
    for _ in range(60):  # 60 steps of 8
        ids = sampler.next(8)
        tokens += np.bincount(domain_of[ids], weights=lengths[ids], minlength=k)
        _check_bound(tokens, p, max_len)
    # in samples the same proportions are far from the token shares (lengths differ 20x between domains)
    counts = sampler.drawn / sampler.drawn.sum()
    assert np.abs(counts - p).max() > 0.05


def test_token_state_resumes_exactly():
    rows = [np.arange(0, 30), np.arange(30, 50)]
    lengths = np.arange(50) % 7 + 1
    a = ProportionSampler(rows, [0.3, 0.7], seed=1, unit="tokens", item_tokens=lengths)
    a.next(13)
    b = ProportionSampler(rows, [0.3, 0.7], seed=1, unit="tokens", item_tokens=lengths)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert a.next(40).tolist() == b.next(40).tolist()
    s = ProportionSampler(rows, [0.3, 0.7], seed=1)
    with pytest.raises(ValueError, match="mixture_unit changed"):
        s.load_state_dict(a.state_dict())


def test_sampler_refuses_to_pass_max_repetitions():
    sampler = ProportionSampler(
        [np.arange(4), np.arange(4, 100)], [0.5, 0.5], domain_names=["small", "big"], max_uses=[6, None]
    )
    sampler.next(12)  # 6 of `small`: 1.5 passes, within the bound
    with pytest.raises(MixtureInfeasible, match=r"'small'.*7 samples drawn > 6 allowed"):
        sampler.next(2)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_static_mix_by_tokens_meets_proportions_every_step(compose, tmp_path, monkeypatch):
    """A real run on the embedded SFT data (item lengths differ by domain): after every step the trained
    tokens are within one sample per domain of the proportions, and `mixture/achieved_tokens/<domain>` logs
    them."""
    from dataflex.train.trainer.dynamic_mix import DynamicMixTrainer

    seen = []
    original = DynamicMixTrainer.on_step_end

    def record(self, done, ctx):
        seen.append((self, ctx.indices.copy()))
        return original(self, done, ctx)

    monkeypatch.setattr(DynamicMixTrainer, "on_step_end", record)
    p = np.asarray([0.4, 0.3, 0.1, 0.1, 0.1])
    run_dir = tmp_path / "run"
    run(
        compose(
            "trainer=dynamic_mix",
            "trainer.static_mix=true",
            "trainer.train_step=6",
            "trainer.mixture_unit=tokens",
            "trainer.mixture_sample_rule=mixture",
            f"trainer.init_mixture_proportions=[{','.join(map(str, p))}]",
            "data.max_samples=40",
            *TINY,
        ),
        run_dir,
    )
    trainer = seen[0][0]
    lengths, domain_of = trainer.item_tokens, np.asarray(trainer.train_data.domain_ids)
    data = trainer.train_data
    assert data.store is not None  # lengths read from the token store's offsets equal the items' lengths
    assert lengths.tolist() == [len(data[i].input_ids) for i in range(len(data))]
    max_len = np.asarray([lengths[r].max() for r in trainer.domain_rows], dtype=float)
    assert max_len.max() > max_len.min()  # lengths differ by domain, so samples != tokens
    records = [r for r in _metrics(run_dir) if any(k.startswith("mixture/achieved_tokens/") for k in r)]
    tokens = np.zeros(len(p))
    for (_, ids), rec in zip(seen, records, strict=True):
        tokens += np.bincount(domain_of[ids], weights=lengths[ids], minlength=len(p))
        _check_bound(tokens, p, max_len)
        logged = [rec[f"mixture/achieved_tokens/{n}"] for n in trainer.domain_names]
        assert np.allclose(logged, tokens / tokens.sum())


def test_infeasible_mixture_fails_before_training_with_the_numbers(compose, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "small.jsonl").write_text(
        "".join(json.dumps({"text": f"small document {i}"}) + "\n" for i in range(4))
    )
    (folder / "big.jsonl").write_text(
        "".join(json.dumps({"text": f"big document number {i}"}) + "\n" for i in range(200))
    )
    (folder / "dataset_info.yaml").write_text(
        "small:\n  path: small.jsonl\n  max_repetitions: 2\nbig:\n  path: big.jsonl\n"
    )
    run_dir = tmp_path / "run"
    with pytest.raises(
        MixtureInfeasible,
        match=r"small: needs 20 samples at proportion 0\.500, has 4 x "
        r"max_repetitions 2 = 8",
    ):
        run(
            compose(
                "trainer=dynamic_mix",
                "trainer.static_mix=true",
                "trainer.train_step=10",
                "trainer.per_device_train_batch_size=4",
                f"data.dataset={folder}",
                *TINY[:5],
                "trainer.disable_tqdm=true",
            ),
            run_dir,
        )
    metrics = run_dir / "metrics.jsonl"
    assert not metrics.exists() or not metrics.read_text().strip()  # no step was trained
