"""`export_schedule(run_dir)`: the proportion history of a finished `trainer=dynamic_mix` run as a
`MixtureSchedule` (constant interpolation: exactly what the run trained on).

Sources, in order of preference:
1. `mixture_history.json` (written by the Mix trainer at the end of a run): every proportion change with the
   step after which it took effect, bit-exact floats, plus the trainer's update schedule.
2. `metrics.jsonl`: the `mixture/<domain>` values logged at step 0 and at every update (the run may not have
   finished). JSON floats round-trip, so these are exact too; `mixture/achieved_tokens/<domain>` is not a
   proportion in force and is ignored.

Several records at one step (the initial proportions and a mixer call at step 0 with `warmup_step=0`, or
a resumed run logging again) collapse to the last one: the one the batches after that step followed.
Consecutive points with identical proportions are kept (a replay must call `set_proportions` at the same
steps as the run: the sampler restarts its deficit counters on every call), so `source.trainer` records the
update schedule a replay should use.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .schedule import MixtureSchedule, ScheduleError, save_schedule

HISTORY_JSON = "mixture_history.json"
METRICS_JSONL = "metrics.jsonl"
MIXTURE_PREFIX = "mixture/"


def export_schedule(run_dir: str | Path) -> MixtureSchedule:
    run_dir = Path(run_dir)
    history = run_dir / HISTORY_JSON
    if history.is_file():
        return _from_history(json.loads(history.read_text()), run_dir)
    metrics = run_dir / METRICS_JSONL
    if metrics.is_file():
        return _from_metrics(metrics, run_dir)
    raise ScheduleError(
        f"{run_dir}: neither {HISTORY_JSON} nor {METRICS_JSONL} found; export_schedule reads the run dir "
        "of a "
        "trainer=dynamic_mix run."
    )


def _collapse(records: list[tuple[int, list[float]]]) -> list[tuple[int, list[float]]]:
    by_step: dict[int, list[float]] = {}
    for step, props in records:
        by_step[step] = props  # the last record of a step is the one in force after it
    return sorted(by_step.items())


def _from_history(content: dict[str, Any], run_dir: Path) -> MixtureSchedule:
    domains = list(content["domains"])
    records = [(int(u["step"]), [float(p) for p in u["proportions"]]) for u in content["updates"]]
    if not records:
        raise ScheduleError(f"{run_dir / HISTORY_JSON}: no proportion records.")
    points = _collapse(records)
    source = {
        "run_dir": str(run_dir),
        "from": HISTORY_JSON,
        "trainer": dict(content.get("schedule") or {}),
        "sources": [u.get("source") for u in content["updates"]],
    }
    schedule = MixtureSchedule.from_points(domains, points)
    return MixtureSchedule(schedule.domains, schedule.points, "constant", source)


def _from_metrics(path: Path, run_dir: Path) -> MixtureSchedule:
    domains: list[str] = []
    records: list[tuple[int, dict[str, float]]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            found = {
                k[len(MIXTURE_PREFIX) :]: float(v)
                for k, v in row.items()
                if k.startswith(MIXTURE_PREFIX) and "/" not in k[len(MIXTURE_PREFIX) :]
            }
            if found:
                for name in found:
                    if name not in domains:
                        domains.append(name)
                records.append((int(row["step"]), found))
    if not records:
        raise ScheduleError(f"{path}: no `mixture/<domain>` values; was it a trainer=dynamic_mix run?")
    ordered = []
    for step, found in records:
        if sorted(found) != sorted(domains):
            raise ScheduleError(
                f"{path}: the record at step {step} has domains {sorted(found)}, others have "
                f"{sorted(domains)}."
            )
        ordered.append((step, [found[d] for d in domains]))
    schedule = MixtureSchedule.from_points(domains, _collapse(ordered))
    return MixtureSchedule(
        schedule.domains, schedule.points, "constant", {"run_dir": str(run_dir), "from": METRICS_JSONL}
    )


def export_trained_ids(run_dir: str | Path) -> dict[str, Any] | None:
    """The exact trained sample ids per step, from the run's data ledger (`dataflex.train.ledger`); None when
    the run has no ledger. `{"steps": [1, 2, ...], "sample_ids": [[...], ...], "skipped": [bool, ...]}` in the
    order the loop trained them (a step whose update was dropped is listed, flagged `skipped`)."""
    from dataflex.train.ledger import read_ledger

    table = read_ledger(run_dir)
    if table.num_rows == 0:
        return None
    steps = np.asarray(table.column("step").to_numpy())
    ids = np.asarray(table.column("sample_id").to_numpy())
    skipped = np.asarray(table.column("skipped").to_numpy())
    starts = np.flatnonzero(np.r_[True, steps[1:] != steps[:-1]])
    ends = np.r_[starts[1:], len(steps)]
    return {
        "steps": [int(steps[a]) for a in starts],
        "sample_ids": [ids[a:b].tolist() for a, b in zip(starts, ends)],
        "skipped": [bool(skipped[a:b].any()) for a, b in zip(starts, ends)],
    }


def replay_overrides(schedule: MixtureSchedule, path: str | Path) -> list[str]:
    """The `dataflex-run` overrides that replay an exported schedule with the run's own update cadence
    (the sampler restarts its deficit counters at every mixer call, so the calls must fall on the same steps
    for the same draws). Model, data, seed and the other trainer keys are the user's to repeat."""
    trainer = schedule.source.get("trainer") or {}
    out = [
        "trainer=dynamic_mix",
        "component=schedule",
        f"component.path={Path(path).resolve()}",
    ]
    for key in ("warmup_step", "update_step", "update_times", "mixture_sample_rule"):
        if key in trainer:
            out.append(f"trainer.{key}={trainer[key]}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`dataflex-export <run dir> [-o schedule.yaml]`: writes the run's proportion schedule and prints the
    overrides that replay it."""
    p = argparse.ArgumentParser(prog="dataflex-export", description=main.__doc__)
    p.add_argument("run_dir", help="a finished (or running) trainer=dynamic_mix run dir")
    p.add_argument(
        "-o", "--output", default=None, help="schedule file (.yaml or .json); default <run dir>/schedule.yaml"
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        schedule = export_schedule(args.run_dir)
    except ScheduleError as err:
        raise SystemExit(f"dataflex-export: {err}") from None
    path = save_schedule(schedule, args.output or Path(args.run_dir) / "schedule.yaml")
    print(f"dataflex-export: {len(schedule.points)} proportion changes -> {path}")
    manifest = export_trained_ids(args.run_dir)
    if manifest is not None:
        ids_path = path.with_name(path.stem + "_trained_ids.json")
        ids_path.write_text(json.dumps(manifest))
        print(
            f"dataflex-export: trained ids of {len(manifest['steps'])} steps (from the ledger) -> {ids_path}"
        )
    print(
        "replay: dataflex-run " + " ".join(replay_overrides(schedule, path)) + " <the run's other overrides>"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
