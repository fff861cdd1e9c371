"""Builds the mixer named by the composed `component` config.

Three ways, all ending in `cls(mixture_manager=..., <context it asks for>, **params)`:
- a built-in option (`component=odm`): its schema's `_target_` class with the config's keys;
- `component=custom component.name=<registered> component.module=<pkg.mod>`: the registry (spec API), with
  `component.params` (and any `+component.<arg>`) as constructor arguments;
- `component._target_=pkg.Class`: any importable class, the config's other keys as its arguments.

Context objects (accelerator, model, data, run dir, ...) are passed only to the constructor parameters
that name them, so the spec's `RandomMixer(mixture_manager, seed)` works unchanged.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dataflex.config.component import run_schema_checks
from dataflex.config.component.mix import CustomMixerConfig
from dataflex.core.registry import get_component

from .base_mixer import Mixer
from .static_mixer import KeepMixer

REGISTRY_TARGET = "registry"


def _validate_schema(cfg: DictConfig) -> None:
    """Runs the schema's `__post_init__` checks (and reports missing required keys by name)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"{', '.join('component.' + m for m in missing)} must be set (no default).")
    run_schema_checks(cfg)


def resolve_class(target: str) -> type:
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise ValueError(f"component._target_={target!r} is not a dotted path like my_pkg.my_module.MyMixer.")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"component._target_={target}: cannot import it ({err}); is its package on PYTHONPATH?"
        ) from err


def mixer_class_and_params(cfg: DictConfig | None) -> tuple[type, dict[str, Any]]:
    if cfg is None:
        return KeepMixer, {}
    _validate_schema(cfg)
    values = OmegaConf.to_container(cfg, resolve=True)
    target = values.pop("_target_", None)
    if target == REGISTRY_TARGET:
        name, module = values.pop("name"), values.pop("module", None)
        params = dict(values.pop("params", None) or {})
        params.update(values)  # `+component.<arg>=...` at the top level
        if module:
            importlib.import_module(module)
        import dataflex.train.mixer  # noqa: F401  (the built-in mixers register themselves)

        try:
            return get_component("mixer", name), params
        except KeyError as err:
            raise KeyError(
                f"component.name={name!r}: {err.args[0]} Import your module with component.module=<module>."
            ) from None
    if not target:
        raise ValueError(
            "component has no _target_; choose a mixer with component=<name> or set component._target_."
        )
    if (
        OmegaConf.get_type(cfg) is CustomMixerConfig
    ):  # component=custom with a class: its keys are not arguments
        name, module = values.pop("name"), values.pop("module", None)
        if name != CustomMixerConfig.name:
            raise ValueError(
                f"component.name={name!r} and component._target_={target} both choose the mixer; set "
                "only one of them."
            )
        if module:
            importlib.import_module(module)
        values = {**(values.pop("params", None) or {}), **values}
    return resolve_class(target), values


def build_mixer(cfg: DictConfig | None, context: dict[str, Any]) -> Mixer:
    cls, params = mixer_class_and_params(cfg)
    signature = inspect.signature(cls.__init__)
    clash = sorted(set(params) & set(context))
    if clash:
        raise ValueError(f"component.{clash[0]} is provided by the trainer and cannot be configured.")
    accepted = {k: v for k, v in context.items() if k in signature.parameters}
    try:
        mixer = cls(**accepted, **params)
    except TypeError as err:
        raise TypeError(
            f"building mixer {cls.__module__}.{cls.__qualname__} with component arguments "
            f"{sorted(params)} failed: {err}"
        ) from err
    if not isinstance(mixer, Mixer):
        raise TypeError(
            f"{cls.__qualname__} is not a dataflex.train.mixer.base_mixer.Mixer; under trainer=dynamic_mix "
            "the component must be a mixer."
        )
    return mixer
