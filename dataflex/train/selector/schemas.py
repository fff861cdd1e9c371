"""Schemas of the selectors (components under trainer=dynamic_select)."""

SCHEMAS: dict[str, dict[str, type]] = {}
