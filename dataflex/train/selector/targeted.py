"""Shared plumbing of the selectors that aim at a validation/target set: resolving the target set
(`TargetedSelector`), LESS-style gradient features (`GradientSelector`: less, cluster_less, nice) and
embeddings (`EmbeddingSelector`: near, tsds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dataflex.train.selector.base_selector import Selector, logger
from dataflex.train.selector.scoring import (
    EncoderCache,
    GradientFeatureSpec,
    TargetSet,
    embeddings,
    gradient_feature_rows,
    resolve_target,
)
from dataflex.train.signals.gradients import optimizer_has_moments


class TargetedSelector(Selector):
    """A selector with a target set: its own `target_*` keys, else the trainer's defaults (resolved lazily,
    on first use, so that a config error surfaces with the key that is missing)."""

    selector_name = "targeted"
    _target: TargetSet | None = None

    @property
    def target(self) -> TargetSet:
        if self._target is None:
            self._target = resolve_target(
                self.ctx,
                selector=self.selector_name,
                target_domain=self.config.target_domain,
                target_dataset=self.config.target_dataset,
                target_split=self.config.target_split,
                target_max_samples=self.config.target_max_samples,
            )
        return self._target


class GradientSelector(TargetedSelector):
    """LESS-style features: Adam-preconditioned (or plain) training gradients, plain target gradients, one
    seeded projection for both, L2-normalised."""

    _warned_no_moments = False

    @property
    def spec(self) -> GradientFeatureSpec:
        return GradientFeatureSpec(
            proj_dim=self.config.proj_dim,
            proj_type=self.config.proj_type,
            seed=int(self.seed if self.seed is not None else self.ctx.seed),
            gradient_type=self.config.gradient_type,
            bias_correction=self.config.bias_correction,
            adam_variant=self.config.adam_variant,
        )

    def train_features(self, model, ids: np.ndarray, optimizer) -> torch.Tensor:
        if (
            self.config.gradient_type == "adam"
            and optimizer is not None
            and not optimizer_has_moments(optimizer)
            and not self._warned_no_moments
        ):
            self._warned_no_moments = True
            logger.warning(
                f"{self.selector_name}: Adam-preconditioned features were requested before the optimizer "
                "has any moments (no optimizer step yet, e.g. trainer.warmup_step=0): they are elementwise "
                "sign gradients. Train a few warmup steps first or set component.gradient_type=sgd."
            )
        return gradient_feature_rows(
            model,
            self.ctx.train_data,
            ids,
            self.ctx,
            self.spec,
            optimizer=optimizer,
            precondition=self.config.gradient_type == "adam",
        )

    def target_features(self, model) -> torch.Tensor:
        t = self.target
        return gradient_feature_rows(model, t.data, t.ids, self.ctx, self.spec, precondition=False)


class EmbeddingSelector(TargetedSelector):
    """Mean-pooled embeddings from the training model, or from a local encoder (`encoder_path`, loaded
    once)."""

    _encoder: EncoderCache | None = None

    def embed(self, model, data, ids: np.ndarray):
        if self.config.encoder_path and self._encoder is None:
            if not Path(self.config.encoder_path).is_dir():
                raise FileNotFoundError(
                    f"component.encoder_path={self.config.encoder_path!r} is not a local model folder."
                )
            self._encoder = EncoderCache(self.config.encoder_path, self.ctx.device)
        return embeddings(model, data, ids, self.ctx, encoder=self._encoder)


def load_npy(path: str, key: str) -> np.ndarray:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"component.{key}={path!r} does not exist (paths are relative to your working dir)."
        )
    return np.load(path)
