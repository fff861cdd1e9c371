"""Mixers for `trainer=dynamic_mix`: importing this package registers the built-in ones
(`static`, `none`, `random`, `odm`, `doremi`, `dynamic_moe`) under `dataflex.core.registry`."""

from .base_mixer import DomainStats, Mixer, MixtureManager
from .doremi import DoReMiMixer
from .dynamic_moe import DynamicMoeMixer
from .odm import OdmMixer
from .random_mixer import RandomMixer
from .static_mixer import KeepMixer, StaticMixer

__all__ = [
    "DoReMiMixer",
    "DomainStats",
    "DynamicMoeMixer",
    "KeepMixer",
    "Mixer",
    "MixtureManager",
    "OdmMixer",
    "RandomMixer",
    "StaticMixer",
]
