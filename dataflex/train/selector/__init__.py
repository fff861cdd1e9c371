"""Selectors for `trainer=dynamic_select`; importing this package registers them by name."""

from .base_selector import SelectionContext, Selector
from .cluster_less_selector import ClusterLessSelector
from .custom_selector import CustomSelector
from .delta_loss_selector import DeltaLossSelector
from .icons_selector import IconsSelector
from .less_selector import LessSelector
from .loss_selector import LossSelector
from .near_selector import NearSelector
from .nice_selector import NiceSelector
from .precomputed_selector import PrecomputedSelector
from .random_selector import RandomSelector
from .tsds_selector import TsdsSelector

__all__ = [
    "ClusterLessSelector",
    "CustomSelector",
    "DeltaLossSelector",
    "IconsSelector",
    "LessSelector",
    "LossSelector",
    "NearSelector",
    "NiceSelector",
    "PrecomputedSelector",
    "RandomSelector",
    "SelectionContext",
    "Selector",
    "TsdsSelector",
]
