"""Schemas of the mixers (components under trainer=dynamic_mix)."""

SCHEMAS: dict[str, dict[str, type]] = {}
