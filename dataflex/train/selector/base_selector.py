"""The selector API of the spec: `Selector(dataset, accelerator, data_collator, cache_dir)` with
`select(model, step_id, num_samples, **kwargs) -> indices` and an optional `warmup(num_samples, replacement)`.

The trainer (`trainer=dynamic_select`) builds the selector, then calls `bind(context)` to hand it what
the framework knows (eval data, tokenizer pad id, device, ranks, run dir); the spec's constructor stays
unchanged, so a user's selector written for the original DataFlex works as is. `select` receives, as
keyword arguments, `candidates` (the item ids to choose from this update), `update_index`/
`current_update_times` (1-based), `update_times`, `update_step` and `optimizer` (the live optimizer).

Built-in selectors also set `last_scores` (one float per returned index) and `last_info` (a small dict),
which the trainer saves and logs; every selector has `state_dict()` / `load_state_dict()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataflex.utils.logging import logger

__all__ = ["Selector", "SelectionContext", "logger"]


@dataclass
class SelectionContext:
    """What the trainer tells a selector once it is built (see `Selector.bind`)."""

    train_data: Any
    eval_data: Any = None
    pad_token_id: int = 0
    tokenizer: Any = None
    device: Any = "cpu"
    seed: int = 42
    batch_size: int = 16
    """Micro-batch size for per-sample gradient features (backward)."""
    eval_batch_size: int | None = None
    """Row cap of forward-only scoring batches (losses, embeddings; None: the token budget alone, 64 rows for
    embeddings)."""
    max_tokens: int | None = None
    """Padded tokens per forward-only loss batch (trainer.scoring_max_tokens; None: sized from free
    memory)."""
    rank: int = 0
    world_size: int = 1
    run_dir: Path | None = None
    target_domain: str | None = None
    """trainer.target_domain: the default target set of selectors that need one."""
    target_dataset: str | None = None
    lockstep: bool = False
    """Every rank must run the same number of forwards (DeepSpeed ZeRO-3: each one gathers the weights)."""
    signals: Any = None
    """A `dataflex.train.pipeline.signals.SignalCache` (trainer=pipeline): losses, embeddings and gradient
    features of training items come from it, computed once and shared by the stages. None: computed here."""


class Selector:
    """Base class of every selector (spec API). Subclasses override `select` (and optionally `warmup`)."""

    Config: Any = None
    """A built-in selector's schema (dataflex/config/component/select.py): its parameters, handed over as
    `config` (it also holds `cache_dir` and `seed`); None for the spec's plain constructor."""

    def __init__(
        self, dataset, accelerator, data_collator, cache_dir=None, seed: int | None = None, config: Any = None
    ) -> None:
        self.config = config if config is not None or self.Config is None else self.Config()
        if self.config is not None:
            cache_dir, seed = self.config.cache_dir or cache_dir, getattr(self.config, "seed", seed)
        self.dataset = dataset
        self.accelerator = accelerator
        self.data_collator = data_collator
        self.cache_dir = cache_dir
        self.seed = seed
        self.context: SelectionContext | None = None
        self.last_scores: np.ndarray | None = None
        self.last_info: dict[str, Any] = {}

    # ---- framework wiring ------------------------------------------------------------------------------
    def bind(self, context: SelectionContext) -> None:
        """Called by the trainer after construction; the component's `seed` defaults to `trainer.seed`."""
        self.context = context
        if self.seed is None:
            self.seed = context.seed

    @property
    def ctx(self) -> SelectionContext:
        if self.context is None:  # used outside the trainer: derive what we can
            self.context = SelectionContext(
                train_data=self.dataset,
                device=getattr(self.accelerator, "device", "cpu"),
                seed=self.seed if self.seed is not None else 42,
            )
        return self.context

    def rng(self, *keys: int) -> np.random.Generator:
        """A generator keyed by (seed, *keys): the same keys give the same draws on every rank and resume."""
        seed = self.seed if self.seed is not None else self.ctx.seed
        return np.random.default_rng([int(seed), *[int(k) for k in keys]])

    def candidate_ids(self, kwargs: dict[str, Any]) -> np.ndarray:
        """The item ids this update may choose from: `candidates` if the trainer passed them, else all."""
        cands = kwargs.get("candidates")
        if cands is None:
            return np.arange(len(self.dataset), dtype=np.int64)
        return np.asarray(cands, dtype=np.int64)

    # ---- the spec's API --------------------------------------------------------------------------------
    def warmup(self, num_samples: int, replacement: bool) -> list[int]:
        """Seeded uniform sample of the whole dataset (without replacement unless asked)."""
        n = len(self.dataset)
        if not replacement and num_samples > n:
            raise ValueError(
                f"warmup needs {num_samples} samples without replacement but the dataset has {n}; "
                "lower trainer.warmup_step or use more data."
            )
        rng = self.rng(0x5EED)
        picked = rng.integers(0, n, size=num_samples) if replacement else rng.permutation(n)[:num_samples]
        return [int(i) for i in picked]

    def select(self, model, step_id: int, num_samples: int, **kwargs) -> list[int]:
        raise NotImplementedError(
            f"{type(self).__name__} must implement select(model, step_id, num_samples, **kwargs)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = state.get("seed", self.seed)


def weighted_sample(probs: np.ndarray, k: int, rng: np.random.Generator, replacement: bool) -> np.ndarray:
    """`k` positions drawn with probability `probs` (normalised here); without replacement this is
    successive sampling (as `torch.multinomial`), and needs at least `k` positive entries."""
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum()
    if not replacement and (p > 0).sum() < k:
        raise ValueError(
            f"cannot draw {k} distinct samples: only {(p > 0).sum()} have a positive probability"
        )
    return rng.choice(len(p), size=k, replace=replacement, p=p)


def top_k(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the `k` largest scores; ties broken by a seeded random order (not by position)."""
    scores = np.asarray(scores, dtype=np.float64)
    if k > len(scores):
        raise ValueError(f"cannot take the top {k} of {len(scores)} candidates")
    order = np.lexsort((rng.permutation(len(scores)), -scores))
    return order[:k]
