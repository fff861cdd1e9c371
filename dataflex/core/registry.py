"""Component registry (public API of the spec): `@register_selector("name")`, `@register_mixer`,
`@register_weighter`, and lookup by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

REGISTRY: dict[str, dict[str, type]] = {"selector": {}, "mixer": {}, "weighter": {}}


def _register(kind: str, name: str) -> Callable[[type[T]], type[T]]:
    def decorator(cls: type[T]) -> type[T]:
        existing = REGISTRY[kind].get(name)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"A {kind} named {name!r} is already registered ({existing.__module__}."
                f"{existing.__qualname__}); pick another name."
            )
        REGISTRY[kind][name] = cls
        return cls

    return decorator


def register_selector(name: str):
    return _register("selector", name)


def register_mixer(name: str):
    return _register("mixer", name)


def register_weighter(name: str):
    return _register("weighter", name)


def get_component(kind: str, name: str) -> type:
    try:
        return REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY[kind])) or "none"
        raise KeyError(f"No {kind} named {name!r} is registered. Registered {kind}s: {known}.") from None
