"""Data ordering: score-based permutations (patterns.py) for `trainer=dynamic_reorder`."""

from dataflex.train.reorder.patterns import PATTERNS, ReorderSpec, reorder

__all__ = ["PATTERNS", "ReorderSpec", "reorder"]
