"""Data plugins (spec 003): loaders by file type, converters to the standard sample format, and the
index plugin that realises `size`/`weight`. Each kind has a public `register_*` decorator."""

from .converter import get_converter, list_converters, register_converter
from .index import DataIndex, get_index_plugin, register_index_plugin
from .loader import LoaderPlugin, get_loader, list_loaders, register_loader

__all__ = [
    "DataIndex",
    "LoaderPlugin",
    "get_converter",
    "get_index_plugin",
    "get_loader",
    "list_converters",
    "list_loaders",
    "register_converter",
    "register_index_plugin",
    "register_loader",
]
