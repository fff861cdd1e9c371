"""Schemas of the dynamic trainers (dynamic_mix, dynamic_select, dynamic_weight)."""

SCHEMAS: dict[str, dict[str, type]] = {}
