"""The plan of one window: the ids of the next `update_step` global batches, in training order, with the
provenance of every slot (which stages filtered, chose and ordered it) and optional per-id weights.

Provenance is a chain of stage names joined by `>` in the order they acted: `filter:loss>mix:odm>reorder:saw`
means the id survived the loss filter, the ODM mix drew it, and the saw pattern placed it. The ledger's
`stage` column gets this chain (plus `+<weight stage>` for every weight stage active in that step), so
`dataflex-report ledger` shows what each stage did to the data over time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataflex.data.sampling import IndexListSampler, SamplerExhausted

SEP = ">"


@dataclass
class Plan:
    ids: np.ndarray
    """Item ids in training order (int64)."""
    chosen_by: str
    """The stage that drew the ids (the budget-taker; `uniform` when no stage takes the budget)."""
    filtered_by: list[str] = field(default_factory=list)
    """Filter stages whose kept pool the ids were drawn from (in order)."""
    ordered_by: str | None = None
    """The reorder stage that permuted the window (None: the taker's order)."""
    weights: np.ndarray | None = None
    """Optional per-id weights a stage attached to the plan (None: 1.0)."""
    boundary: int = 0
    """Steps done when the plan was made (its first step, 0-based)."""
    start: int = 0
    """Ids already handed out when the plan is (re)built (a resumed plan continues from there)."""

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        self.queue = IndexListSampler(self.ids)
        """Hands the ids out in order, never recycling one (the same sampler dynamic_select uses)."""
        self.queue.pos = int(self.start)

    @property
    def provenance(self) -> str:
        """The stage chain every id of this plan went through."""
        return SEP.join([*self.filtered_by, self.chosen_by, *([self.ordered_by] if self.ordered_by else [])])

    def stages_of(self, sample_id: int) -> list[str]:
        """The stages that acted on `sample_id` (empty if the plan does not hold it)."""
        return self.provenance.split(SEP) if int(sample_id) in set(self.ids.tolist()) else []

    @property
    def pos(self) -> int:
        """Ids handed out so far."""
        return self.queue.pos

    @property
    def remaining(self) -> int:
        return self.queue.remaining

    def next(self, n: int) -> np.ndarray:
        try:
            return self.queue.next(n)
        except SamplerExhausted:
            raise SamplerExhausted(
                f"the pipeline's plan made after {self.boundary} steps holds {self.remaining} more ids, "
                f"{n} were asked for (a window is update_step x global batch)"
            ) from None

    def to_json(self) -> dict[str, Any]:
        return {
            "boundary": self.boundary,
            "provenance": self.provenance,
            "chosen_by": self.chosen_by,
            "filtered_by": list(self.filtered_by),
            "ordered_by": self.ordered_by,
            "ids": self.ids.tolist(),
            "weights": None if self.weights is None else [float(w) for w in self.weights],
        }

    def state_dict(self) -> dict[str, Any]:
        return {**self.to_json(), "pos": self.pos}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Plan:
        weights = state.get("weights")
        return cls(
            ids=np.asarray(state["ids"], dtype=np.int64),
            chosen_by=str(state["chosen_by"]),
            filtered_by=list(state["filtered_by"]),
            ordered_by=state["ordered_by"],
            weights=None if weights is None else np.asarray(weights, dtype=np.float64),
            boundary=int(state["boundary"]),
            start=int(state["pos"]),
        )
