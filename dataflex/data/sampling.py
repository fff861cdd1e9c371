"""Samplers: the global stream of engine indices that the trainers consume, one plan at a time.

All samplers share one interface: ``next(n)`` returns the next ``n`` indices of the *global* stream
(identical on every rank for the same seed; ranks slice the global batch themselves), and
``state_dict()`` / ``load_state_dict()`` capture the position so that a resumed run continues in O(1)
(no replay of the stream). Randomness comes only from ``np.random.default_rng([seed, ...])`` streams
keyed by what they shuffle, never from global state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import MixtureInfeasible, SamplerExhausted

_EPS = 1e-9
MIXTURE_UNITS = ("samples", "tokens")


class EpochSampler:
    """Epoch after epoch over ``range(num_items)``: a fresh permutation per epoch, seeded by
    ``(seed, epoch)`` (or identity order when ``shuffle=False``); epochs are chained seamlessly, so a
    batch may straddle two epochs. `epoch` is the epoch of the next index to be drawn."""

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True) -> None:
        if num_items <= 0:
            raise ValueError(f"EpochSampler needs num_items > 0, got {num_items}")
        self.num_items, self.seed, self.shuffle = int(num_items), int(seed), bool(shuffle)
        self.epoch, self.pos = 0, 0
        self._order: np.ndarray | None = None

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
            else:
                self._order = np.arange(self.num_items, dtype=np.int64)
        return self._order

    def next(self, n: int) -> np.ndarray:
        out = np.empty(int(n), dtype=np.int64)
        filled = 0
        while filled < n:
            order = self._epoch_order()
            take = min(self.num_items - self.pos, n - filled)
            out[filled : filled + take] = order[self.pos : self.pos + take]
            filled += take
            self.pos += take
            if self.pos == self.num_items:
                self.epoch, self.pos, self._order = self.epoch + 1, 0, None
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "epoch",
            "num_items": self.num_items,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
            "pos": self.pos,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, "epoch")
        if state["num_items"] != self.num_items:
            raise ValueError(
                f"EpochSampler state is for {state['num_items']} items, this sampler has "
                f"{self.num_items}: the dataset changed since the checkpoint"
            )
        self.seed, self.shuffle = int(state["seed"]), bool(state["shuffle"])
        self.epoch, self.pos, self._order = int(state["epoch"]), int(state["pos"]), None


class ProportionScheduler:
    """Which domain gets each next slot so that every prefix follows the proportions to within one sample.

    Rule (a deficit rule as in Megatron's dataset blending, made exact): for slot ``t`` (1-based, counted
    since the proportions were last set), a domain with count ``c_d`` is *eligible* when it is not ahead
    of its target, ``c_d <= p_d * t``; among eligible domains the one whose next sample is due soonest,
    smallest ``(c_d + 1) / p_d`` (ties: lowest domain id), gets the slot. This is earliest-deadline-first
    scheduling of unit jobs with windows ``[(j-1)/p_d, j/p_d]``, which always meets every deadline when
    the proportions sum to 1, so ``|c_d(t) - p_d * t| <= 1`` for every prefix ``t`` and domain ``d``.
    Megatron's plain "largest deficit" choice does not guarantee that bound for all proportions.
    """

    def __init__(self, proportions: Iterable[float]) -> None:
        self.p = [float(x) for x in proportions]
        self.t = 0
        self.counts = [0] * len(self.p)

    def next_domain(self) -> int:
        self.t += 1
        t, best, best_due = self.t, -1, math.inf
        for d, p in enumerate(self.p):
            if p <= 0.0:
                continue
            c = self.counts[d]
            if c <= p * t + _EPS:
                due = (c + 1) / p
                if due < best_due - _EPS:
                    best, best_due = d, due
        self.counts[best] += 1
        return best

    def undo(self, d: int) -> None:
        """Take back the last slot, which went to domain `d` (a stream that turned out to be exhausted)."""
        self.t -= 1
        self.counts[d] -= 1

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "counts": list(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t, self.counts = int(state["t"]), [int(c) for c in state["counts"]]


class TokenProportionScheduler:
    """Which domain gets the next sample so that the proportions hold for *tokens* (OLMo-core mixes sources by
    token ratios): the domain furthest behind its token target, largest ``p_d * T - c_d`` over domains with
    ``p_d > 0`` (``T`` tokens drawn since the proportions were set, ``c_d`` of them from domain d; ties: the
    lowest domain id). Call `add(d, tokens)` with the length of the sample drawn.

    Bound: the deficits sum to zero, so the largest is >= 0 and a domain is only chosen while it is not ahead
    of its target; after its sample it is ahead by less than that one sample (``c_d - p_d T < len``). Being
    behind is bounded by the others' lead: ``p_d T - c_d <`` one sample of every other domain. OLMo-core fixes
    every source's token budget before training (Hamilton rounding over whole instances); we decide sample by
    sample, because a dynamic mixer changes the proportions during the run."""

    def __init__(self, proportions: Iterable[float]) -> None:
        self.p = [float(x) for x in proportions]
        self.total = 0
        self.tokens = [0] * len(self.p)

    def next_domain(self) -> int:
        best, best_deficit = -1, -math.inf
        for d, p in enumerate(self.p):
            if p > 0.0:
                deficit = p * self.total - self.tokens[d]
                if deficit > best_deficit + _EPS:
                    best, best_deficit = d, deficit
        return best

    def add(self, d: int, tokens: int) -> None:
        self.tokens[d] += int(tokens)
        self.total += int(tokens)

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "tokens": list(self.tokens)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.tokens = int(state["total"]), [int(c) for c in state["tokens"]]


def validate_proportions(
    proportions: Sequence[float], names: Sequence[str], available: Sequence[int] | None = None
) -> np.ndarray:
    """Check a proportion vector against the domains; returns it as float64. It is *not* normalised: it
    must already sum to 1 (within 1e-6), because a vector that does not is more likely a bug upstream
    (a mixer forgetting to normalise, a wrong domain order) than an intent."""
    p = np.asarray(proportions, dtype=np.float64).reshape(-1)
    listing = ", ".join(f"{n}={v:g}" for n, v in zip(names, p)) if len(p) == len(names) else ""
    if len(p) != len(names):
        raise ValueError(
            f"got {len(p)} proportions for {len(names)} domains {list(names)}; give one per domain"
        )
    if not np.all(np.isfinite(p)):
        raise ValueError(f"proportions must be finite numbers: {listing}")
    if np.any(p < 0):
        bad = [n for n, v in zip(names, p) if v < 0]
        raise ValueError(f"proportions must be >= 0; negative for domain(s) {bad}: {listing}")
    total = float(p.sum())
    if total <= 0:
        raise ValueError(f"proportions are all zero for domains {list(names)}; at least one must be > 0")
    if abs(total - 1.0) > 1e-6:
        raise ValueError(
            f"proportions must sum to 1 (got {total:.6g}): {listing}. Normalise them first (p / p.sum())."
        )
    if available is not None:
        empty = [n for n, v, a in zip(names, p, available) if v > 0 and a == 0]
        if empty:
            raise ValueError(f"domain(s) {empty} have proportion > 0 but no rows: {listing}")
    return p / total


class ProportionSampler:
    """Mixes domains by proportions: the domain of every slot comes from `ProportionScheduler` (each
    prefix within one sample per domain of its target), and the sample within the domain is drawn
    without replacement: a permutation of the domain's rows per *pass*, seeded by ``(seed, domain,
    pass)``; when a domain is exhausted the next pass (a fresh permutation) continues it, so every row of
    a domain is used before any repeats.

    `set_proportions` changes the proportions from the next draw on. The deficit counters then restart
    at zero (the new plan's prefixes are measured from the switch, so the one-sample bound holds for the
    new plan from its first batch), while the within-domain positions continue (no row is re-used early
    because the plan changed).

    `unit="tokens"` (with `item_tokens`, the length of every item): proportions are shares of the drawn
    tokens (`TokenProportionScheduler`). `max_uses[d]`: the most a domain may be drawn, in the unit (rows or
    tokens times its `max_repetitions`); a draw past it raises `MixtureInfeasible` naming the numbers.
    """

    def __init__(
        self,
        domain_rows: Sequence[np.ndarray],
        proportions: Sequence[float],
        seed: int = 0,
        domain_names: Sequence[str] | None = None,
        unit: str = "samples",
        item_tokens: np.ndarray | None = None,
        max_uses: Sequence[float | None] | None = None,
    ) -> None:
        if unit not in MIXTURE_UNITS:
            raise ValueError(f"mixture unit must be one of {MIXTURE_UNITS}, got {unit!r}")
        if unit == "tokens" and item_tokens is None:
            raise ValueError("unit='tokens' needs item_tokens (the token count of every item)")
        self.unit = unit
        self.item_tokens = None if item_tokens is None else np.asarray(item_tokens, dtype=np.int64)
        self.domain_rows = [np.asarray(r, dtype=np.int64) for r in domain_rows]
        self.max_uses = list(max_uses) if max_uses is not None else [None] * len(self.domain_rows)
        self.used = np.zeros(len(self.domain_rows), dtype=np.int64)
        """Drawn per domain since construction, in the unit (what `max_uses` bounds)."""
        self.names = (
            list(domain_names)
            if domain_names is not None
            else [f"domain{d}" for d in range(len(self.domain_rows))]
        )
        if len(self.names) != len(self.domain_rows):
            raise ValueError(f"{len(self.names)} domain names for {len(self.domain_rows)} domains")
        self.seed = int(seed)
        self.pos = [0] * len(self.domain_rows)
        self.passes = [0] * len(self.domain_rows)
        self.drawn = np.zeros(len(self.domain_rows), dtype=np.int64)
        """Samples drawn per domain since construction (across plans)."""
        self._perm: list[np.ndarray | None] = [None] * len(self.domain_rows)
        self.set_proportions(proportions)

    @property
    def proportions(self) -> np.ndarray:
        """The proportions in force, as given to `set_proportions` (the schedule draws by their normalised
        form)."""
        return self._given.copy()

    def set_proportions(self, proportions: Sequence[float]) -> None:
        p = validate_proportions(proportions, self.names, [len(r) for r in self.domain_rows])
        self._scheduler = TokenProportionScheduler(p) if self.unit == "tokens" else ProportionScheduler(p)
        self._given = np.asarray(proportions, dtype=np.float64).reshape(-1).copy()

    def _take(self, d: int) -> int:
        perm = self._perm[d]
        if perm is None:
            perm = self._perm[d] = np.random.default_rng([self.seed, d, self.passes[d]]).permutation(
                len(self.domain_rows[d])
            )
        row = int(self.domain_rows[d][perm[self.pos[d]]])
        self.pos[d] += 1
        if self.pos[d] == len(perm):
            self.pos[d], self.passes[d], self._perm[d] = 0, self.passes[d] + 1, None
        return row

    def next(self, n: int) -> np.ndarray:
        out = np.empty(int(n), dtype=np.int64)
        for i in range(int(n)):
            d = self._scheduler.next_domain()
            row = out[i] = self._take(d)
            amount = 1
            # (unit="tokens" <=> a token scheduler and item_tokens, see __init__)
            if isinstance(self._scheduler, TokenProportionScheduler) and self.item_tokens is not None:
                amount = int(self.item_tokens[row])
                self._scheduler.add(d, amount)
            self.used[d] += amount
            if self.max_uses[d] is not None and self.used[d] > self.max_uses[d]:
                raise MixtureInfeasible(
                    f"domain {self.names[d]!r} reached its max_repetitions bound: "
                    f"{self.used[d]} {self.unit} drawn > {self.max_uses[d]:g} allowed (its "
                    f"data times max_repetitions) at proportions "
                    f"{', '.join(f'{n}={v:.3f}' for n, v in zip(self.names, self.proportions))}. "
                    "Raise the domain's max_repetitions in dataset_info, lower its proportion "
                    "or train fewer steps."
                )
            self.drawn[d] += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "proportion",
            "seed": self.seed,
            "proportions": self.proportions.tolist(),
            "scheduler": self._scheduler.state_dict(),
            "pos": list(self.pos),
            "passes": list(self.passes),
            "drawn": self.drawn.tolist(),
            "domain_sizes": [len(r) for r in self.domain_rows],
            "unit": self.unit,
            "used": self.used.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, "proportion")
        sizes = [len(r) for r in self.domain_rows]
        if list(state["domain_sizes"]) != sizes:
            raise ValueError(
                f"ProportionSampler state is for domain sizes {state['domain_sizes']}, this "
                f"sampler has {sizes}: the dataset changed since the checkpoint"
            )
        if state.get("unit", "samples") != self.unit:
            raise ValueError(
                f"ProportionSampler state mixes by {state.get('unit', 'samples')}, this sampler by "
                f"{self.unit}: trainer.mixture_unit changed since the checkpoint"
            )
        self.seed = int(state["seed"])
        self.set_proportions(state["proportions"])
        self._scheduler.load_state_dict(state["scheduler"])
        self.pos, self.passes = [int(x) for x in state["pos"]], [int(x) for x in state["passes"]]
        self.drawn = np.asarray(state["drawn"], dtype=np.int64)
        self.used = np.asarray(state.get("used", self.drawn), dtype=np.int64)
        self._perm = [None] * len(self.domain_rows)


class IndexListSampler:
    """Yields exactly the given indices, in order. Asking for more than remain raises `SamplerExhausted`
    (nothing is consumed then) unless ``cycle=True``, which starts the list over. A selection plan
    therefore trains on exactly the selected samples, never on silently recycled ones."""

    def __init__(self, indices: Sequence[int] | np.ndarray, cycle: bool = False) -> None:
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if cycle and len(self.indices) == 0:
            raise ValueError("IndexListSampler(cycle=True) needs a non-empty index list")
        self.cycle, self.pos = bool(cycle), 0

    @property
    def remaining(self) -> int:
        return len(self.indices) - self.pos

    def next(self, n: int) -> np.ndarray:
        n = int(n)
        if not self.cycle:
            if n > self.remaining:
                raise SamplerExhausted(
                    f"IndexListSampler asked for {n} indices but only {self.remaining} of "
                    f"{len(self.indices)} remain; give it a longer selection"
                )
            out = self.indices[self.pos : self.pos + n].copy()
            self.pos += n
            return out
        take = (self.pos + np.arange(n)) % len(self.indices)
        self.pos = int((self.pos + n) % len(self.indices))
        return self.indices[take]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "index_list", "indices": self.indices.tolist(), "pos": self.pos, "cycle": self.cycle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, "index_list")
        self.indices = np.asarray(state["indices"], dtype=np.int64)
        self.pos, self.cycle = int(state["pos"]), bool(state["cycle"])


def _check_kind(state: dict[str, Any], kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"state_dict of a {state.get('kind')!r} sampler given to a {kind!r} sampler")
