"""Mixture schedules: the domain proportions as a function of the training step.

A schedule is a list of points ``(step, proportions)`` over named domains. ``step`` counts *steps done*,
the trainer's convention (`mixture_history.json`, `Mixer.mix(model, step_id)`): the proportions of the
point at step ``s`` govern the batches from step ``s + 1`` on. The first point must be at step 0 (so the
proportions of every step are defined); steps are strictly increasing.

Interpolation between points:
- ``constant`` (default): a point holds until the next one (what every dynamic mixer's history is);
- ``linear``: the proportions move linearly from one point to the next (a convex combination, so they stay
  on the simplex) and hold after the last point. The trainer only changes proportions when it calls the
  mixer, so a linear ramp is followed at the trainer's update cadence (`trainer.update_step`).

File format (YAML or JSON, chosen by the suffix; `.yaml`/`.yml` or `.json`)::

    domains: [greet, arith, noise]
    interpolation: constant
    points:
      - {step: 0, proportions: [0.5, 0.25, 0.25]}
      - {step: 40, proportions: {greet: 0.2, arith: 0.4, noise: 0.4}}   # a mapping by name works too
    source: {...}   # optional, free-form: where the schedule came from (export_schedule fills it)

Proportions are never normalised silently (as everywhere in DataFlex): each point must sum to 1 within 1e-6.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

INTERPOLATIONS = ("constant", "linear")
SUM_TOLERANCE = 1e-6
"""How far from 1 a point's proportions may sum (the same tolerance as the trainer's proportion checks)."""


class ScheduleError(ValueError):
    """A schedule that is malformed; the message names the point and what to fix."""


@dataclass(frozen=True)
class SchedulePoint:
    step: int
    """Steps done when these proportions take effect (they govern step `step + 1` onward)."""
    proportions: tuple[float, ...]
    """One per domain, in the schedule's domain order; sums to 1."""


@dataclass(frozen=True)
class MixtureSchedule:
    domains: tuple[str, ...]
    points: tuple[SchedulePoint, ...]
    interpolation: str = "constant"
    source: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (the exporting run dir, its trainer schedule); not used to compute proportions."""

    def __post_init__(self) -> None:
        check_schedule(self)

    # ---- queries ------------------------------------------------------------------------------------------
    def at(self, step: int) -> np.ndarray:
        """The proportions in force after `step` steps done (they govern step `step + 1`)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        steps = [p.step for p in self.points]
        i = int(np.searchsorted(steps, step, side="right")) - 1  # last point with point.step <= step
        here = np.asarray(self.points[i].proportions, dtype=np.float64)
        if self.interpolation == "constant" or i == len(self.points) - 1:
            return here
        nxt = self.points[i + 1]
        frac = (step - self.points[i].step) / (nxt.step - self.points[i].step)
        return (1.0 - frac) * here + frac * np.asarray(nxt.proportions, dtype=np.float64)

    def change_steps(self) -> list[int]:
        """The steps at which the proportions change (every point's step; with linear interpolation the
        proportions also change in between)."""
        return [p.step for p in self.points]

    def reorder(self, names: Sequence[str]) -> MixtureSchedule:
        """The same schedule over `names` (the training data's domain order); every name must match."""
        names = list(names)
        if sorted(names) != sorted(self.domains):
            missing = sorted(set(names) - set(self.domains))
            extra = sorted(set(self.domains) - set(names))
            raise ScheduleError(
                f"the schedule's domains {list(self.domains)} do not match the training data's {names}"
                + (f"; missing from the schedule: {missing}" if missing else "")
                + (f"; not in the data: {extra}" if extra else "")
                + ". Name every training domain exactly once."
            )
        index = [self.domains.index(n) for n in names]
        points = tuple(SchedulePoint(p.step, tuple(p.proportions[j] for j in index)) for p in self.points)
        return MixtureSchedule(tuple(names), points, self.interpolation, dict(self.source))

    # ---- (de)serialisation ---------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "domains": list(self.domains),
            "interpolation": self.interpolation,
            "points": [{"step": p.step, "proportions": list(p.proportions)} for p in self.points],
        }
        if self.source:
            out["source"] = self.source
        return out

    @classmethod
    def from_dict(cls, content: Mapping[str, Any], where: str = "schedule") -> MixtureSchedule:
        if not isinstance(content, Mapping):
            raise ScheduleError(f"{where}: expected a mapping with 'domains' and 'points', got {content!r}")
        unknown = sorted(set(content) - {"domains", "interpolation", "points", "source"})
        if unknown:
            raise ScheduleError(
                f"{where}: unknown key(s) {unknown}; a schedule has domains, points, interpolation, source."
            )
        for key in ("domains", "points"):
            if key not in content:
                raise ScheduleError(f"{where}: missing '{key}'.")
        domains = tuple(str(d) for d in content["domains"])
        points = tuple(
            _point(raw, domains, f"{where}: points[{i}]") for i, raw in enumerate(content["points"] or [])
        )
        return cls(
            domains,
            points,
            str(content.get("interpolation", "constant")),
            dict(content.get("source") or {}),
        )

    @classmethod
    def from_points(
        cls,
        domains: Sequence[str],
        points: Sequence[tuple[int, Sequence[float] | Mapping[str, float]]],
        interpolation: str = "constant",
    ) -> MixtureSchedule:
        """From an inline list, e.g. `[(0, [0.5, 0.5]), (10, {"a": 0.9, "b": 0.1})]`."""
        raw = [{"step": s, "proportions": p} for s, p in points]
        return cls.from_dict({"domains": list(domains), "points": raw, "interpolation": interpolation})


def _point(raw: Any, domains: tuple[str, ...], where: str) -> SchedulePoint:
    if not isinstance(raw, Mapping) or set(raw) != {"step", "proportions"}:
        raise ScheduleError(f"{where}: expected {{step: <int>, proportions: [...]}}, got {raw!r}")
    step = raw["step"]
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) and not float(step).is_integer():
        raise ScheduleError(f"{where}: step must be an integer, got {step!r}")
    values = raw["proportions"]
    if isinstance(values, Mapping):
        names = [str(k) for k in values]
        if sorted(names) != sorted(domains):
            raise ScheduleError(
                f"{where}: proportions name {sorted(names)} but the schedule's domains are {list(domains)}; "
                "name every domain once."
            )
        values = [values[d] for d in domains]
    try:
        props = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ScheduleError(f"{where}: proportions must be numbers, got {values!r}") from err
    return SchedulePoint(int(step), props)


def check_schedule(schedule: MixtureSchedule) -> None:
    """Raises `ScheduleError` naming the first problem: domains unique and non-empty, a known
    interpolation, at least one point, the first at step 0, steps strictly increasing, and every point's
    proportions one per domain, finite, >= 0, summing to 1."""
    names = list(schedule.domains)
    if not names:
        raise ScheduleError("a schedule needs at least one domain.")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ScheduleError(f"domain name(s) {dup} appear more than once in {names}.")
    if schedule.interpolation not in INTERPOLATIONS:
        raise ScheduleError(
            f"interpolation={schedule.interpolation!r} is unknown; choose one of {INTERPOLATIONS}."
        )
    if not schedule.points:
        raise ScheduleError("a schedule needs at least one point (step 0).")
    if schedule.points[0].step != 0:
        raise ScheduleError(
            f"the first point is at step {schedule.points[0].step}; a schedule starts at step 0 so that "
            "every step's proportions are defined."
        )
    for i, point in enumerate(schedule.points):
        where = f"points[{i}] (step {point.step})"
        if i and point.step <= schedule.points[i - 1].step:
            raise ScheduleError(
                f"{where}: steps must be strictly increasing; the previous point is at step "
                f"{schedule.points[i - 1].step}."
            )
        p = point.proportions
        if len(p) != len(names):
            raise ScheduleError(f"{where}: {len(p)} proportions for {len(names)} domains {names}.")
        listing = ", ".join(f"{n}={v:g}" for n, v in zip(names, p))
        if not all(math.isfinite(v) for v in p):
            raise ScheduleError(f"{where}: proportions must be finite: {listing}.")
        negative = [n for n, v in zip(names, p) if v < 0]
        if negative:
            raise ScheduleError(f"{where}: proportions must be >= 0; negative for {negative}: {listing}.")
        if abs(sum(p) - 1.0) > SUM_TOLERANCE:
            raise ScheduleError(
                f"{where}: proportions sum to {sum(p):.6g}, not 1: {listing}. Normalise them (p / sum(p))."
            )


# ---- files ----------------------------------------------------------------------------------------------
def load_schedule(path: str | Path) -> MixtureSchedule:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ScheduleError(f"cannot read the schedule file {path} ({err}).") from err
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        content = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ScheduleError(f"{path}: not valid {'YAML' if is_yaml else 'JSON'} ({err}).") from err
    return MixtureSchedule.from_dict(content, where=str(path))


def save_schedule(schedule: MixtureSchedule, path: str | Path) -> Path:
    """Writes YAML for `.yaml`/`.yml`, JSON otherwise; floats are written with full precision (repr), so
    a saved schedule loads back to the same numbers bit for bit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = schedule.as_dict()
    if path.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(content, sort_keys=False, default_flow_style=None)
    else:
        text = json.dumps(content, indent=1)
    path.write_text(text)
    return path
