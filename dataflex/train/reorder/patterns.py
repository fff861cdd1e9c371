"""Score-based data orderings (microsoft/data-efficacy's `data_ordering`, DELT and "Demystifying Data
Organization"): pure functions from per-sample scores to a permutation.

Every function returns positions into `scores` (an int64 array holding each position exactly once): item
`perm[0]` is trained first. Nothing is dropped or repeated: an ordering changes *when* a sample is seen, never
*whether*. The definitions follow data-efficacy (read, not copied):

- `shuffle`: a seeded random order (the baseline).
- `sorting`: by score; `ascending=True` puts low scores first, so high scores come *later* (the polarity).
- `folding` (FO, DELT): sort, then visit the sorted list in `layers` passes, pass l taking positions l, l+L,
  l+2L, ...: every pass sweeps the whole score range once (the curriculum repeats `layers` times).
- `zigzag` (ZIG): folding whose odd passes run backwards, so consecutive passes meet without a score jump.
- `segment` (SEG, "boundary sharpening"): the first `x_pct`% of the order is drawn from the low (or high)
  end of the score range, the last `y_pct`% from the low (or high) end; the rest forms the middle; each of
  the three segments is shuffled.
- `stair` (STR) / `saw` (SAW): sorted order split into `sections` equal sections; around each section boundary
  a transition region of radius round(n * folding_ratio) is folded (stair) or zig-zagged (saw) with `layers`
  passes, so the curriculum crosses the boundary gradually instead of in one jump.
- `window` ("jittering", JIT): after any of sorting/folding/zigzag/stair/saw, each consecutive block of
  `window` items is shuffled (local diversity, global trend kept); 0 or 1 turns it off.

Deviations from data-efficacy, all deliberate:
- Inputs are a score array and outputs positions, not JSONL records; ties in the sort keep the original order
  in both directions (as Python's stable `sorted(reverse=True)` there does).
- Random draws use the same generators in the same sequence (`random.Random(seed).shuffle` for shuffle and
  segment, `numpy.random.default_rng(seed).shuffle` per window for JIT), so a seed gives the very permutation
  data-efficacy gives; `tests/reorder/` pins hand-derived cases, not this coincidence.
- NaN scores are refused (data-efficacy would sort them arbitrarily).
- data-efficacy's optional Gumbel rank jitter of `sorting` (off in all its configs) is not ported; `window`
  gives local diversity.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PATTERNS = ("shuffle", "sorting", "folding", "zigzag", "segment", "stair", "saw")


def _scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if np.isnan(values).any():
        bad = np.flatnonzero(np.isnan(values))[:10].tolist()
        raise ValueError(f"reorder: scores at positions {bad} are NaN; score every sample before ordering.")
    return values


def _layers(layers: int, name: str) -> int:
    if int(layers) < 1:
        raise ValueError(f"reorder: {name} must be >= 1, got {layers}")
    return int(layers)


def sort_order(scores: Sequence[float] | np.ndarray, ascending: bool = True) -> np.ndarray:
    """Positions by score (stable: equal scores keep their original order, in both directions)."""
    values = _scores(scores)
    return np.argsort(values if ascending else -values, kind="stable").astype(np.int64)


def shuffle_order(n: int, seed: int) -> np.ndarray:
    """A seeded random permutation of range(n) (Python's Mersenne Twister, as data-efficacy's `shuffle`)."""
    perm = list(range(n))
    random.Random(seed).shuffle(perm)
    return np.asarray(perm, dtype=np.int64)


def fold(sorted_positions: np.ndarray, layers: int) -> np.ndarray:
    """FO: pass l takes sorted_positions[l], [l + layers], [l + 2 layers], ... ; passes concatenated."""
    layers = _layers(layers, "layers")
    arr = np.asarray(sorted_positions, dtype=np.int64)
    return np.concatenate([arr[k::layers] for k in range(layers)]) if len(arr) else arr


def zigzag(sorted_positions: np.ndarray, layers: int) -> np.ndarray:
    """ZIG: `fold` with every odd pass (1, 3, ...) reversed."""
    layers = _layers(layers, "layers")
    arr = np.asarray(sorted_positions, dtype=np.int64)
    passes = [arr[k::layers][::-1] if k % 2 else arr[k::layers] for k in range(layers)]
    return np.concatenate(passes) if len(arr) else arr


def window_shuffle(order: np.ndarray, window: int, seed: int) -> np.ndarray:
    """JIT: shuffle each consecutive block of `window` items in place of the block (0 or 1: unchanged)."""
    out = np.array(order, dtype=np.int64, copy=True)
    if window is None or window <= 1:
        return out
    rng = np.random.default_rng(seed)
    for start in range(0, len(out), window):
        block = out[start : start + window]  # a view: shuffled in place
        rng.shuffle(block)
    return out


def transition_order(
    sorted_positions: np.ndarray, sections: int, ratio: float, layers: int, mode: str
) -> np.ndarray:
    """STR/SAW on a sorted order: split points round(n*s/sections) for s = 1..sections-1 (Python's round,
    half to even, as data-efficacy); around each, the region [split - r, split + r) (r = round(n * ratio),
    clipped to the data and to where the previous region ended) is reordered by `fold` (mode "folding") or
    `zigzag` (mode "zigzag") with `layers` passes; everything else stays sorted."""
    sections = _layers(sections, "sections")
    layers = _layers(layers, "layers")
    if ratio < 0:
        raise ValueError(f"reorder: folding_ratio must be >= 0, got {ratio}")
    if mode not in ("folding", "zigzag"):
        raise ValueError(f"reorder: transition mode must be folding or zigzag, got {mode!r}")
    arr = np.asarray(sorted_positions, dtype=np.int64)
    n = len(arr)
    if n == 0 or sections == 1 or ratio == 0:
        return arr.copy()
    radius = round(n * ratio)
    reorder_region = fold if mode == "folding" else zigzag
    parts: list[np.ndarray] = []
    cursor = 0
    for s in range(1, sections):
        split = round(n * s / sections)
        start, end = max(cursor, split - radius), min(n, split + radius)
        parts.append(arr[cursor:start])
        parts.append(reorder_region(arr[start:end], layers))
        cursor = max(cursor, end)
    parts.append(arr[cursor:])
    return np.concatenate(parts)


def segment_order(
    scores: Sequence[float] | np.ndarray,
    x_pct: float,
    y_pct: float,
    front_is_high: bool,
    back_is_high: bool,
    seed: int,
) -> np.ndarray:
    """SEG: front = the int(n*x_pct//100) lowest (front_is_high: highest) scores, back = the int(n*y_pct//100)
    lowest/highest of what is left, middle = the rest; each segment shuffled. When both ends are the same
    side, front and back are a random split of the n_front + n_back items at that end. x_pct + y_pct > 100
    is scaled down (a warning), as data-efficacy does. Ascending sort first; `ascending` does not apply."""
    values = _scores(scores)
    n = len(values)
    ranked = list(sort_order(values, ascending=True))
    n_front, n_back = int(n * x_pct // 100), int(n * y_pct // 100)
    if n_front < 0 or n_back < 0:
        raise ValueError(f"reorder: segment x_pct/y_pct must be >= 0, got {x_pct}, {y_pct}")
    if n_front + n_back > n:
        n_front = int(n_front * n / (n_front + n_back))
        n_back = n - n_front
        warnings.warn(
            f"reorder: segment x_pct + y_pct exceeds 100; resized to {n_front} front and {n_back} back "
            "samples",
            RuntimeWarning,
            stacklevel=2,
        )

    def take(pool: list[int], k: int, high: bool) -> tuple[list[int], list[int]]:
        if k <= 0:
            return [], list(pool)
        return (pool[-k:], pool[:-k]) if high else (pool[:k], pool[k:])

    rng = random.Random(seed)
    if bool(front_is_high) == bool(back_is_high):
        chosen, middle = take(ranked, n_front + n_back, bool(front_is_high))
        rng.shuffle(chosen)
        front, back = chosen[:n_front], chosen[n_front:]
    else:
        front, rest = take(ranked, n_front, bool(front_is_high))
        back, middle = take(rest, n_back, bool(back_is_high))
    for segment in (front, middle, back):
        rng.shuffle(segment)
    return np.asarray(front + middle + back, dtype=np.int64)


@dataclass(frozen=True)
class ReorderSpec:
    """One ordering and its knobs (the `trainer=dynamic_reorder` config maps onto this)."""

    pattern: str = "folding"
    """shuffle | sorting | folding | zigzag | segment | stair | saw."""
    ascending: bool = True
    """Polarity: True sorts low scores first (high scores later); False high first. Not used by segment."""
    layers: int = 3
    """Passes of folding / zigzag and of the transition regions of stair / saw (data-efficacy: 5, 5, 3, 2)."""
    sections: int = 3
    """stair / saw: number of equal sections of the sorted order (data-efficacy: stair 2, saw 3)."""
    folding_ratio: float = 0.075
    """stair / saw: transition radius as a share of the data (data-efficacy: stair 0.225, saw 0.075)."""
    x_pct: float = 10.0
    """segment: share (percent) of the order in the front segment."""
    y_pct: float = 10.0
    """segment: share (percent) of the order in the back segment."""
    front_is_high: bool = False
    """segment: the front segment holds the highest scores (False: the lowest)."""
    back_is_high: bool = True
    """segment: the back segment holds the highest scores (False: the lowest)."""
    window: int = 0
    """JIT: shuffle inside consecutive windows of this many items (0/1: off; not used by shuffle/segment)."""
    seed: int = 42
    """Seed of every random draw (shuffle, segment, window)."""

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"reorder.pattern={self.pattern!r} is not one of {', '.join(PATTERNS)}")
        _layers(self.layers, "reorder.layers")
        _layers(self.sections, "reorder.sections")
        if self.folding_ratio < 0:
            raise ValueError(f"reorder.folding_ratio must be >= 0, got {self.folding_ratio}")
        if self.x_pct < 0 or self.y_pct < 0:
            raise ValueError(f"reorder.x_pct / y_pct must be >= 0, got {self.x_pct}, {self.y_pct}")
        if self.window < 0:
            raise ValueError(f"reorder.window must be >= 0, got {self.window}")


def reorder(scores: Sequence[float] | np.ndarray, spec: ReorderSpec) -> np.ndarray:
    """The permutation (positions into `scores`, first-trained first) that `spec` gives these scores."""
    values = _scores(scores)
    if spec.pattern == "shuffle":
        return shuffle_order(len(values), spec.seed)
    if spec.pattern == "segment":
        return segment_order(values, spec.x_pct, spec.y_pct, spec.front_is_high, spec.back_is_high, spec.seed)
    ranked = sort_order(values, spec.ascending)
    if spec.pattern == "folding":
        ranked = fold(ranked, spec.layers)
    elif spec.pattern == "zigzag":
        ranked = zigzag(ranked, spec.layers)
    elif spec.pattern in ("stair", "saw"):
        mode = "folding" if spec.pattern == "stair" else "zigzag"
        ranked = transition_order(ranked, spec.sections, spec.folding_ratio, spec.layers, mode)
    return window_shuffle(ranked, spec.window, spec.seed)
