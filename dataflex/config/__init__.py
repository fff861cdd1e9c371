"""Config schemas and their registration in Hydra's ConfigStore."""

from dataflex.config.store import register_all, register_schema

__all__ = ["register_all", "register_schema"]
