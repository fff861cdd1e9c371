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

`export_trained_ids` / `recipe_for`: the trained-id recipe of any run with a data ledger (select, weight, mix,
pipeline), which `trainer=static trainer.replay=<recipe>` trains exactly (`dataflex.mixing.recipe`).
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
    """The run's static recipe (`dataflex.mixing.recipe`): the exact trained sample ids per step, from the
    run's data ledger (`dataflex.train.ledger`), with the ledger's weights (None for a step whose weights are
    all 1.0: the plain mean) and the data identity the loop wrote next to the ledger; None when the run has no
    ledger. Steps appear in the order the loop trained them (a step whose update was dropped is listed,
    flagged `skipped`)."""
    from dataflex.train.ledger import read_ledger

    from .recipe import FORMAT, read_data_identity

    table = read_ledger(run_dir)
    if table.num_rows == 0:
        return None
    steps = np.asarray(table.column("step").to_numpy())
    ids = np.asarray(table.column("sample_id").to_numpy())
    weights = np.asarray(table.column("weight").to_numpy())
    skipped = np.asarray(table.column("skipped").to_numpy())
    starts = np.flatnonzero(np.r_[True, steps[1:] != steps[:-1]])
    ends = np.r_[starts[1:], len(steps)]
    return {
        "format": FORMAT,
        "steps": [int(steps[a]) for a in starts],
        "sample_ids": [ids[a:b].tolist() for a, b in zip(starts, ends)],
        "weights": [
            None if (weights[a:b] == 1.0).all() else weights[a:b].tolist() for a, b in zip(starts, ends)
        ],
        "skipped": [bool(skipped[a:b].any()) for a, b in zip(starts, ends)],
        "data": read_data_identity(run_dir),
    }


def run_config(run_dir: Path) -> dict[str, Any] | None:
    """The composed config the run saved (`<run dir>/.hydra/config.yaml`), or None."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def not_replayable_because(config: dict[str, Any] | None) -> str | None:
    """Why the ids + ledger weights of a run do not determine its updates (None: they do). The loss of a
    DoReMi-style mixer (`reweights_loss`) weighs domains inside the loss, and a token-level weighter (rho1)
    weighs tokens: the ledger keeps one weight per sample, so neither replays from it."""
    if not config:
        return None
    from hydra.utils import get_class

    target = (config.get("component") or {}).get("_target_")
    trainer = str((config.get("trainer") or {}).get("_target_", ""))
    if not target:
        return None
    try:
        cls = get_class(str(target))
    except Exception:  # a user class that is not importable here: nothing to say
        return None
    if trainer.endswith("DynamicMixTrainer") and getattr(cls, "reweights_loss", False):
        return f"its mixer {target} reweights the loss by domain inside the step (not in the ledger)."
    if trainer.endswith("DynamicWeightTrainer") and getattr(cls, "level", "sample") == "token":
        return f"its weighter {target} weighs tokens; the ledger keeps one weight per sample."
    return None


def static_replay_overrides(run_dir: Path, recipe_path: Path) -> list[str]:
    """`dataflex-run` overrides that replay the recipe with trainer=static: the run's own command-line
    overrides (`.hydra/overrides.yaml`) without its trainer choice, its component and the dynamic trainers'
    keys, plus `trainer=static trainer.replay=<recipe>`."""
    from dataclasses import fields

    from dataflex.config.trainer import StaticTrainerConfig

    static_keys = {f.name for f in fields(StaticTrainerConfig)} - {"output_dir", "replay"}
    kept: list[str] = []
    path = run_dir / ".hydra" / "overrides.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        for item in OmegaConf.load(path):
            text = str(item)
            key = text.lstrip("+~").split("=", 1)[0]
            if key in ("trainer", "component") or key.startswith("component."):
                continue
            if key.startswith("trainer.") and key.split(".", 1)[1].split(".")[0] not in static_keys:
                continue
            kept.append(text)
    out = ["trainer=static", f"trainer.replay={recipe_path.resolve()}"]
    config = run_config(run_dir)
    reduction = ((config or {}).get("trainer") or {}).get("loss_reduction")
    if reduction and not any(o.startswith("trainer.loss_reduction=") for o in kept):
        out.append(
            f"trainer.loss_reduction={reduction}"
        )  # the dynamic trainers' defaults differ from static's
    return [*out, *kept]


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


def recipe_for(run_dir: Path) -> dict[str, Any] | None:
    """The run's trained-id recipe with its provenance and replayability (None without a ledger)."""
    manifest = export_trained_ids(run_dir)
    if manifest is None:
        return None
    config = run_config(run_dir)
    trainer = (config or {}).get("trainer") or {}
    manifest["source"] = {
        "run_dir": str(run_dir.resolve()),
        "trainer": trainer.get("_target_"),
        "component": ((config or {}).get("component") or {}).get("_target_"),
        "loss_reduction": trainer.get("loss_reduction"),
    }
    reason = not_replayable_because(config)
    manifest["replayable"] = reason is None
    if reason is not None:
        manifest["not_replayable_because"] = reason
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """`dataflex-export <run dir> [-o schedule.yaml] [--ids trained_ids.json]`: writes the static recipe of
    a dynamic run: its proportion schedule (mix runs) and its trained-id manifest (every run with a data
    ledger: mix, select, weight, pipeline), and prints the overrides that replay each."""
    p = argparse.ArgumentParser(prog="dataflex-export", description=main.__doc__)
    p.add_argument("run_dir", help="a finished (or running) dataflex-run run dir")
    p.add_argument(
        "-o", "--output", default=None, help="schedule file (.yaml or .json); default <run dir>/schedule.yaml"
    )
    p.add_argument(
        "--ids",
        default=None,
        help="trained-id recipe (.json); default next to the schedule (<stem>_trained_ids.json), or "
        "<run dir>/trained_ids.json for a run without a mixture",
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    run_dir = Path(args.run_dir)
    schedule_path: Path | None = None
    try:
        schedule = export_schedule(run_dir)
    except ScheduleError as err:
        schedule, why = None, err
    if schedule is not None:
        schedule_path = save_schedule(schedule, args.output or run_dir / "schedule.yaml")
        print(f"dataflex-export: {len(schedule.points)} proportion changes -> {schedule_path}")
    manifest = recipe_for(run_dir)
    if schedule is None and manifest is None:
        raise SystemExit(f"dataflex-export: {why}; and no data ledger (ledger/*.parquet) in {run_dir}.")
    if manifest is not None:
        if args.ids:
            ids_path = Path(args.ids)
        elif schedule_path is not None:
            ids_path = schedule_path.with_name(schedule_path.stem + "_trained_ids.json")
        else:
            ids_path = run_dir / "trained_ids.json"
        ids_path.write_text(json.dumps(manifest))
        print(
            f"dataflex-export: trained ids of {len(manifest['steps'])} steps (from the ledger) -> {ids_path}"
        )
    if schedule is not None and schedule_path is not None:
        print(
            "replay: dataflex-run "
            + " ".join(replay_overrides(schedule, schedule_path))
            + " <the run's other overrides>"
        )
    if manifest is not None:
        if manifest["replayable"]:
            print("replay ids: dataflex-run " + " ".join(static_replay_overrides(run_dir, ids_path)))
        else:
            print(f"dataflex-export: no static id replay: {manifest['not_replayable_because']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
