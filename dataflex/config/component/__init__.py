"""Value checks of a composed `component` config against the schema it extends."""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig, OmegaConf


def run_schema_checks(cfg: DictConfig) -> None:
    """Runs the `__post_init__` checks of the dataclass schema behind `cfg` on the keys that schema declares;
    extra keys a user added with `+component.x=` are left to the component's constructor. No-op for an
    untyped config."""
    schema = OmegaConf.get_type(cfg)
    if schema is None or not dataclasses.is_dataclass(schema):
        return
    fields = {f.name for f in dataclasses.fields(schema)}
    values = OmegaConf.to_container(cfg, resolve=True)
    schema(**{k: v for k, v in values.items() if k in fields})
