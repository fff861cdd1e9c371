"""The component contract: one run context, one validation path and one builder for every selector, mixer
and weighter, built-in or the user's own.

A component is chosen by its `component` config: `_target_` names the class (`component=<name>` fills it
from conf/components/<trainer>/<name>.yaml; `component._target_=my_pkg.MyMixer` points at your own, under
any dynamic trainer); `_target_: registry` + `name` (+ `module`) looks the class up in the spec's registry
(`@register_mixer(name)`); `_target_: null` (`component=none`) is "no component". Every other key is a
constructor argument. The builder then

1. checks the config: required keys set and the schema's `__post_init__` value checks (built-in options)
   when the run is validated, before data or model load (`check_component`); then, when the trainer builds
   it, every key against the class's parameters: a dataclass `Config` on the class (typed keys, checked by
   its `__post_init__`, handed over as `config=`), else its constructor signature; an unknown key fails,
   naming it, before the first step;
2. offers the run context by parameter name: a constructor that names `model`, `accelerator`,
   `train_data`, `seed`, ... (the fields of `RunContext`) or one of the trainer's own objects
   (`mixture_manager` for mixers; `dataset`, `data_collator`, `cache_dir` for the spec's selectors) gets
   it, so the spec's `RandomMixer(mixture_manager, seed)` works unchanged. A configured value wins over a
   context value; a configured `None` means "the framework's value".
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from dataflex.core.registry import get_component

REGISTRY_TARGET = "registry"
BY_NAME_KEYS = ("name", "module", "params")
"""Keys of the by-name option (component=custom under dynamic_mix): how to find the class, not arguments."""


@dataclass(frozen=True)
class RunContext:
    """What the loop knows about the run, built once (after the accelerator has prepared model and optimizer)
    and handed to the trainer's `setup` and, by parameter name, to component constructors."""

    model: Any
    """The prepared (possibly DDP/DeepSpeed-wrapped) training model."""
    accelerator: Any
    optimizer: Any
    tokenizer: Any
    train_data: Any
    eval_data: Any
    """None when the data has no eval split."""
    seed: int
    """trainer.seed."""
    rank: int
    world_size: int
    is_main: bool
    """Rank 0: the one process that writes files and logs."""
    run_dir: Path
    global_batch_size: int
    """Samples per optimizer step over all ranks and accumulation steps."""
    total_steps: int
    pad_token_id: int
    zero_stage: int = 0
    """DeepSpeed's ZeRO stage (0 without DeepSpeed)."""

    @property
    def device(self) -> Any:
        return self.accelerator.device

    def offered(self) -> dict[str, Any]:
        """The context as constructor keyword arguments (`run_dir` as a string, as components joined it)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**values, "run_dir": str(self.run_dir)}


@dataclass(frozen=True)
class ComponentKind:
    """What a dynamic trainer consults, and what to say when the config chooses none."""

    name: str
    trainer: str
    choices: str
    required: bool
    base_class: str = ""
    """The base class's path where it is not the spec's dataflex.train.<name>.base_<name>.<Name>."""

    @property
    def base(self) -> str:
        """The base class (the spec's API): dataflex.train.<name>.base_<name>.<Name>, or `base_class`."""
        return self.base_class or f"dataflex.train.{self.name}.base_{self.name}.{self.name.capitalize()}"


KINDS = {
    "selector": ComponentKind(
        "selector",
        "dynamic_select",
        "<random, loss, delta_loss, less, cluster_less, near, tsds, nice, custom>",
        True,
    ),
    "mixer": ComponentKind(
        "mixer", "dynamic_mix", "none|static|random|odm|doremi|dynamic_moe|schedule|ado|aioli|custom", False
    ),
    "per_step_selector": ComponentKind(
        "per_step_selector",
        "per_step",
        "uniform|max_loss|rho_loss|grad_norm|greats",
        True,
        base_class="dataflex.train.perstep.selectors.PerStepSelector",
    ),
    "weighter": ComponentKind("weighter", "dynamic_weight", "loss|adapt|custom|rho1", True),
}


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


def _values(cfg: Any) -> dict[str, Any] | None:
    """The config as plain values; None for "no component"."""
    if cfg is None:
        return None
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"{', '.join('component.' + m for m in missing)} must be set (no default).")
    values = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    if not values.get("_target_"):
        if set(values) - {"_target_"}:
            raise ValueError(
                f"component sets {sorted(set(values) - {'_target_'})} but no component: choose one with "
                "component=<name> or set component._target_=my_pkg.MyClass."
            )
        return None
    schema = OmegaConf.get_type(cfg)
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):  # a built-in option's value checks
        fields = {f.name for f in dataclasses.fields(schema)}
        schema(**{k: v for k, v in values.items() if k in fields})
    return values


def _class_and_params(kind: ComponentKind, values: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    params = dict(values)
    target = params.pop("_target_")
    by_name = {k: params.pop(k) for k in BY_NAME_KEYS if k in params} if "module" in params else {}
    if by_name.get("module"):
        importlib.import_module(by_name["module"])
    params = {**(by_name.get("params") or {}), **params}
    if target != REGISTRY_TARGET:
        if by_name.get("name", "custom") != "custom":
            raise ValueError(
                f"component.name={by_name['name']!r} and component._target_={target} both choose the "
                f"{kind.name}; set only one of them."
            )
        return resolve_class(target), params
    importlib.import_module(kind.base.rsplit(".", 2)[0])  # the built-in components register themselves
    try:
        return get_component(kind.name, by_name.get("name", "custom")), params
    except KeyError as err:
        raise KeyError(
            f"component.name={by_name.get('name')!r}: {err.args[0]} Import your module with "
            "component.module=<module>."
        ) from None


def _parameters(cls: type, params: dict[str, Any], provided: set[str]) -> dict[str, Any]:
    """The constructor arguments `params` make, checked against what the class declares: a dataclass `Config`
    on the class (typed by OmegaConf, values checked by its `__post_init__`, handed over as `config=`), else
    its signature (unless it takes **kwargs). An unknown key fails, naming it and the known ones."""
    schema = getattr(cls, "Config", None)
    typed = isinstance(schema, type) and dataclasses.is_dataclass(schema)
    signature = inspect.signature(cls).parameters
    known = [f.name for f in dataclasses.fields(schema)] if typed and schema is not None else list(signature)
    unknown = sorted(set(params) - set(known))
    if unknown and (typed or not any(p.kind is p.VAR_KEYWORD for p in signature.values())):
        raise ValueError(
            f"component.{unknown[0]} is not a parameter of {cls.__module__}.{cls.__qualname__} "
            f"(unknown: {unknown}); it accepts {[k for k in known if k not in provided]}."
        )
    if not typed:
        return params
    try:
        config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), params))
    except Exception as err:  # noqa: BLE001 - OmegaConf's validation errors: a key and its value
        if isinstance(err, ValueError) and str(err).startswith("component."):
            raise  # the Config's own __post_init__ message
        raise ValueError(f"component.{getattr(err, 'full_key', '?')}: {str(err).splitlines()[0]}") from err
    return {"config": config}


def _check_kind(kind: ComponentKind, cls: Any) -> None:
    base = resolve_class(kind.base)
    if kind.name == "selector":  # the spec allows any class with select(); the base class gives warmup()
        if not callable(getattr(cls, "select", None)):
            raise TypeError(f"{cls.__qualname__} has no select(model, step_id, num_samples) method.")
        return
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(
            f"component._target_={cls.__module__}.{cls.__qualname__} is not a subclass of {kind.base}; "
            f"under trainer={kind.trainer} the component must be a {kind.name}."
        )


def check_component(kind: str, cfg: Any) -> dict[str, Any] | None:
    """Validates a composed `component` config for a trainer that consults a `kind` (selector, mixer,
    weighter) without importing or building anything (`dataflex.run.validate` runs it before data and
    model load): required keys, the built-in schema's value checks, and "none" where one is required.
    Returns the config as plain values (None: no component)."""
    spec = KINDS[kind]
    values = _values(cfg)
    if values is None and spec.required:
        raise ValueError(
            f"trainer={spec.trainer} needs a {kind}: add component={spec.choices}, or point "
            f"component._target_ at your own {spec.base.rsplit('.', 1)[-1]} subclass."
        )
    return values


def build_component(kind: str, cfg: Any, ctx: RunContext | None, **provided: Any) -> Any:
    """Checks `cfg` (see `check_component`) and builds the component with the context its constructor asks
    for: the fields of `ctx` and the trainer's `provided` objects, by parameter name (all that the class
    declares in `context_keys` when it takes **kwargs). Returns None for "no component"."""
    values = check_component(kind, cfg)
    if values is None:
        return None
    cls, params = _class_and_params(KINDS[kind], values)
    _check_kind(KINDS[kind], cls)
    params = _parameters(cls, params, set(provided))
    clash = sorted(k for k in provided if params.get(k) is not None)
    if clash:
        raise ValueError(f"component.{clash[0]} is provided by the trainer and cannot be configured.")
    params = {k: v for k, v in params.items() if not (v is None and k in provided)}
    offered = {**(ctx.offered() if ctx is not None else {}), **provided}
    signature = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in signature.values()):
        names = set(getattr(cls, "context_keys", ())) | set(signature)
    else:
        names = set(signature)
    context = {k: v for k, v in offered.items() if k in names and params.get(k) is None}
    try:
        return cls(**{**params, **context})
    except TypeError as err:
        raise TypeError(
            f"building {kind} {cls.__module__}.{cls.__qualname__} with component arguments "
            f"{sorted(params)} failed: {err}"
        ) from err
