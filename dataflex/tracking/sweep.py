"""Reads finished (or failed) runs back from disk: one `JobResult` per job dir of a sweep.

A job dir is what Hydra makes per job (`.hydra/overrides.yaml`) plus what the run writes: `metrics.jsonl`,
`summary.json` (written by the loop at the end) and `status.json` (written by `dataflex-run` around the job;
`failed` with the error when the job raised). A job with neither summary nor status was killed or is still
running; it is reported as `incomplete` rather than silently dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataflex.tracking.status import STATUS_FILE

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
EVAL_PREFIX = "eval/loss/"


def as_float(value: Any) -> float:
    """metrics.jsonl stores non-finite floats as strings ("nan", "inf"); anything unreadable is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every well-formed line; a job killed mid-write leaves a truncated last line, which is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _read_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(path)]


@dataclass
class JobResult:
    """What the report needs of one job."""

    job_dir: Path
    label: str
    overrides: list[str]
    status: str  # completed | failed | interrupted | incomplete
    error: str = ""
    final_eval: dict[str, float] = field(default_factory=dict)
    eval_step: int | None = None
    """The step `final_eval` was taken at (the last step of a completed job; the last eval of another)."""
    wall_time_s: float = math.nan
    samples_per_s: float = math.nan
    steps: int | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def domain_losses(self) -> dict[str, float]:
        """Final eval loss per domain (the `eval/loss/<domain>` keys)."""
        return {k[len(EVAL_PREFIX) :]: v for k, v in self.final_eval.items() if k.startswith(EVAL_PREFIX)}

    @property
    def average_loss(self) -> float:
        """Unweighted mean over domains (each domain counts once, whatever its eval size)."""
        losses = list(self.domain_losses.values())
        return sum(losses) / len(losses) if losses else math.nan

    @property
    def worst(self) -> tuple[str, float]:
        losses = {d: v for d, v in self.domain_losses.items() if not math.isnan(v)}
        if not losses:
            return "", math.nan
        domain = max(losses, key=losses.__getitem__)
        return domain, losses[domain]


def is_job_dir(path: Path) -> bool:
    return path.is_dir() and any(
        (path / p).exists() for p in (".hydra", METRICS_FILE, SUMMARY_FILE, STATUS_FILE)
    )


def _job_sort_key(path: Path) -> tuple[int, str]:
    match = re.match(r"(\d+)_", path.name)
    return (int(match.group(1)) if match else 1 << 30, path.name)


def find_job_dirs(path: str | Path) -> list[Path]:
    """`path` itself when it is a job dir, else its job subdirs in job-number order."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is not a directory; pass a sweep dir such as "
            "multirun_outputs/<date>/<time> or a run dir such as outputs/<date>/<time>."
        )
    if (path / ".hydra").is_dir() or (path / METRICS_FILE).is_file():
        return [path]
    children = [p for p in path.iterdir() if is_job_dir(p)]
    hydra_jobs = [p for p in children if (p / ".hydra").is_dir()]
    # Jobs that set trainer.output_dir write their metrics into a sibling folder that their status.json
    # points to; counting those folders too would list each such job twice.
    return sorted(hydra_jobs or children, key=_job_sort_key)


def _final_eval(
    summary: dict[str, Any], records: list[dict[str, Any]]
) -> tuple[dict[str, float], int | None]:
    """(the job's final eval metrics, the step they were taken at). A job that did not finish (interrupted,
    failed, killed) reports its last evaluation after step 0: the start eval is no result of training."""
    final = summary.get("final_eval")
    if final:
        return {k: as_float(v) for k, v in final.items()}, summary.get("steps")
    for record in reversed(records):
        if record.get("step", 0) > 0 and any(k.startswith(EVAL_PREFIX) for k in record):
            return {k: as_float(v) for k, v in record.items() if k.startswith("eval/")}, record["step"]
    return {}, None


def read_job(job_dir: str | Path, label: str | None = None) -> JobResult:
    job_dir = Path(job_dir)
    status = _read_json(job_dir / STATUS_FILE)
    data_dir = job_dir
    if not (job_dir / METRICS_FILE).is_file() and status.get("run_dir"):
        data_dir = Path(status["run_dir"])  # trainer.output_dir pointed the run elsewhere
    summary = _read_json(data_dir / SUMMARY_FILE)
    records = read_jsonl(data_dir / METRICS_FILE) if (data_dir / METRICS_FILE).is_file() else []
    state = status.get("status") or ("completed" if summary else "incomplete")
    if state == "running":  # started but never finished: still running, or killed (OOM, time limit)
        state = "incomplete"
    error = status.get("error", "")
    if state == "interrupted":
        error = (
            f"{status.get('signal', 'signal')} after step {status.get('step')}; "
            f"resume: {status.get('resume', '')}"
        )
    final_eval, eval_step = _final_eval(summary, records)
    return JobResult(
        job_dir=job_dir,
        label=label or job_dir.name,
        overrides=_read_overrides(job_dir),
        status=state,
        error=error,
        final_eval=final_eval,
        eval_step=eval_step,
        wall_time_s=as_float(summary.get("wall_time_s", status.get("elapsed_s"))),
        samples_per_s=as_float(summary.get("train_samples_per_s")),
        steps=summary.get("steps"),
        records=records,
    )


def collect_jobs(paths: list[str | Path]) -> list[JobResult]:
    """All jobs under the given sweep/run dirs; labels get the sweep's name when several sweeps are merged."""
    jobs = []
    for path in paths:
        for job_dir in find_job_dirs(path):
            label = job_dir.name if len(paths) == 1 else f"{Path(path).name}/{job_dir.name}"
            jobs.append(read_job(job_dir, label))
    return jobs
