"""DataFlex data layer: `DataArguments` → `DataEngine` (load, convert, index, stream) → samplers.

Names are imported lazily (PEP 562), so `import dataflex.data.arguments` (the config schemas do) does not
pull in torch and `datasets`; `from dataflex.data import DataArguments, DataEngine` works as usual.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DataArguments": ".arguments",
    "DataEngine": ".engine",
    "detect_converter": ".engine",
    "DataError": ".errors",
    "SamplerExhausted": ".errors",
    "DataIndex": ".plugins",
    "LoaderPlugin": ".plugins",
    "list_converters": ".plugins",
    "list_loaders": ".plugins",
    "register_converter": ".plugins",
    "register_index_plugin": ".plugins",
    "register_loader": ".plugins",
    "EpochSampler": ".sampling",
    "IndexListSampler": ".sampling",
    "ProportionSampler": ".sampling",
}
__all__ = [
    "DataArguments",
    "DataEngine",
    "DataError",
    "DataIndex",
    "EpochSampler",
    "IndexListSampler",
    "LoaderPlugin",
    "ProportionSampler",
    "SamplerExhausted",
    "detect_converter",
    "list_converters",
    "list_loaders",
    "register_converter",
    "register_index_plugin",
    "register_loader",
]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:
    from .arguments import DataArguments
    from .engine import DataEngine, detect_converter
    from .errors import DataError, SamplerExhausted
    from .plugins import (
        DataIndex,
        LoaderPlugin,
        list_converters,
        list_loaders,
        register_converter,
        register_index_plugin,
        register_loader,
    )
    from .sampling import EpochSampler, IndexListSampler, ProportionSampler


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dataflex.data' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
