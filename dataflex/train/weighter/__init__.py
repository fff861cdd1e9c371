"""Weighters (components of `trainer=dynamic_weight`). Importing this package registers them by name:
`loss` (Sow et al. 2025), `adapt` (similarity to an anchor set), `custom` (the spec's example), `rho1`
(token selection by excess loss, Lin et al. 2024), `joint_update_aware` (DataFlex PR #58), `precomputed`
(weights from scores computed before training)."""

from dataflex.train.weighter.adapt_weighter import AdaptWeighter
from dataflex.train.weighter.base_weighter import WeightContext, Weighter
from dataflex.train.weighter.custom_weighter import CustomWeighter
from dataflex.train.weighter.joint_update_aware import JointUpdateAwareWeighter
from dataflex.train.weighter.loss_weighter import LossWeighter
from dataflex.train.weighter.precomputed_weighter import PrecomputedWeighter
from dataflex.train.weighter.rho1_weighter import Rho1Weighter

__all__ = [
    "Weighter",
    "WeightContext",
    "LossWeighter",
    "AdaptWeighter",
    "CustomWeighter",
    "Rho1Weighter",
    "JointUpdateAwareWeighter",
    "PrecomputedWeighter",
]
