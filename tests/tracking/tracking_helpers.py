"""Synthetic metrics and job dirs shaped like what the loop and the dynamic trainers write."""

from __future__ import annotations

import json
from pathlib import Path

DOMAINS = ("greet", "arith", "noise")


def dynamic_records(steps: int = 8, update_every: int = 2) -> list[dict]:
    """A run that logs loss, eval, mixture proportions, selection fractions and weights."""
    records = [{"step": 0, "eval/loss": 3.0, **{f"eval/loss/{d}": 3.0 + i for i, d in enumerate(DOMAINS)}}]
    for step in range(1, steps + 1):
        r: dict = {
            "step": step,
            "loss": 3.0 - 0.1 * step,
            "lr": 1e-3,
            "samples_per_s": 100.0,
            **{f"train/loss/{d}": 3.0 + i - 0.1 * step for i, d in enumerate(DOMAINS)},
        }
        if step % update_every == 0:
            p = [0.2 + 0.02 * step, 0.5, 0.3 - 0.02 * step]
            r.update({f"mixture/{d}": v for d, v in zip(DOMAINS, p)})
            r.update({f"select/domain_fraction/{d}": v for d, v in zip(DOMAINS, reversed(p))})
            r.update(
                {
                    "weight/values": [0.5 + 0.1 * k for k in range(10)],
                    "weight/min": 0.5,
                    "weight/max": 1.4,
                    "weight/entropy": 2.2,
                    "weight/ess": 9.1,
                    **{f"weight/domain_mean/{d}": 1.0 + 0.01 * i for i, d in enumerate(DOMAINS)},
                }
            )
            r.update(
                {
                    "eval/loss": 3.0 - 0.05 * step,
                    **{f"eval/loss/{d}": 3.0 + i - 0.05 * step for i, d in enumerate(DOMAINS)},
                }
            )
        records.append(r)
    return records


def write_metrics(run_dir: Path, records: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def make_job(
    sweep: Path,
    name: str,
    overrides: list[str],
    *,
    final: dict | None = None,
    status: dict | None = None,
    records: list[dict] | None = None,
    wall: float = 2.0,
    samples_per_s: float = 50.0,
) -> Path:
    """A job dir as `dataflex-run -m` leaves it: .hydra/overrides.yaml, metrics/summary/status files."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if records is not None:
        write_metrics(job, records)
    if final is not None:
        summary = {
            "run_dir": str(job),
            "steps": 8,
            "wall_time_s": wall,
            "train_samples_per_s": samples_per_s,
            "train_tokens_per_s": 10 * samples_per_s,
            "initial_eval": {},
            "final_eval": final,
        }
        (job / "summary.json").write_text(json.dumps(summary))
    if status is not None:
        (job / "status.json").write_text(json.dumps(status))
    return job
