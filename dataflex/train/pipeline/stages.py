"""The runtime stages of `trainer=pipeline`: each wraps one built component (selector, mixer, weighter) or a
reorder pattern and keeps the state of its decisions. The trainer (`dataflex/train/trainer/pipeline.py`)
runs them at window boundaries in the order filter -> budget-taker -> reorder, and the weight stages at
every step; every stage's decision is broadcast from rank 0, so all ranks hold the same plan.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dataflex.config.infobatch import InfoBatchPruning
from dataflex.config.pipeline import StageSpec
from dataflex.config.trainer import check_proportion_values
from dataflex.data.sampling import EpochSampler, IndexListSampler, ProportionSampler
from dataflex.train.distributed import broadcast_object
from dataflex.train.mixer.base_mixer import DomainStats, MixtureManager
from dataflex.train.reorder.patterns import ReorderSpec, reorder
from dataflex.train.reorder.sampler import ReorderSampler, derived_seed
from dataflex.train.selector.infobatch import InfoBatchSettings, annealing_by_steps, epoch_plan, record_losses
from dataflex.utils.logging import logger


def _ids(values: Any) -> np.ndarray:
    return np.asarray(broadcast_object([int(i) for i in values]), dtype=np.int64)


class StageScores:
    """The scores a select stage's selector gave the ids it returned (`last_scores`, one per id), kept per
    id for a reorder stage with `score_source: stage`; rank 0's values are broadcast, like the ids. An id
    keeps its latest score (a later decision overwrites it; ids not chosen again keep theirs)."""

    def __init__(self, name: str, num_items: int) -> None:
        self.name = name
        self.values = np.full(int(num_items), np.nan, dtype=np.float64)

    def record(self, ids: np.ndarray, selector: Any) -> None:
        scores = getattr(selector, "last_scores", None)
        if scores is None or len(scores) != len(ids):
            raise ValueError(
                f"pipeline stage {self.name}: its selector ({type(selector).__name__}) set no last_scores "
                f"for the {len(ids)} ids it returned, and a reorder stage orders by them (score_source: "
                "stage); set `self.last_scores` (one float per returned id) in select()"
            )
        self.values[ids] = np.asarray(broadcast_object([float(x) for x in scores]), dtype=np.float64)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        out = self.values[np.asarray(ids, dtype=np.int64)]
        if not np.isfinite(out).all():
            missing = np.asarray(ids)[~np.isfinite(out)][:5].tolist()
            raise ValueError(
                f"pipeline stage {self.name} has no score for ids {missing} that the reorder stage orders "
                "(score_source: stage reads the scores of ids that stage returned)"
            )
        return out

    def state_dict(self) -> np.ndarray:
        return self.values.copy()

    def load_state_dict(self, values: Any) -> None:
        if values is not None:
            self.values = np.asarray(values, dtype=np.float64)


class FilterStage:
    """`select` with `mode: filter`: at its due boundaries the selector keeps ceil(keep_ratio x |pool|) ids
    of the pool it receives; between them the kept ids stay (intersected with a changed upstream pool)."""

    def __init__(self, spec: StageSpec, selector: Any) -> None:
        self.spec, self.selector = spec, selector
        self.kept: np.ndarray | None = None
        self.scores: StageScores | None = None
        """Set by the trainer when a reorder stage orders by this stage's scores."""

    def apply(self, done: int, pool: np.ndarray, model: Any, select_kwargs: dict[str, Any]) -> np.ndarray:
        if not self.spec.active(done):
            return pool
        if self.spec.due(done) or self.kept is None:
            k = max(1, int(np.ceil(self.spec.keep_ratio * len(pool))))
            chosen = _ids(self.selector.select(model, done, k, candidates=pool, **select_kwargs))
            if self.scores is not None:
                self.scores.record(chosen, self.selector)
            self.kept = np.unique(chosen)
            if len(self.kept) != k:
                raise ValueError(
                    f"pipeline stage {self.spec.name}: the selector returned {len(self.kept)} distinct ids, "
                    f"the filter keeps {k} (keep_ratio={self.spec.keep_ratio} of {len(pool)}); a filter "
                    "needs a selector that draws without replacement."
                )
        kept = np.intersect1d(self.kept, pool)
        return kept if len(kept) else pool

    def state_dict(self) -> dict[str, Any]:
        return {
            "kept": None if self.kept is None else self.kept.copy(),
            "selector": _state(self.selector),
            "scores": None if self.scores is None else self.scores.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept = None if state["kept"] is None else np.asarray(state["kept"], dtype=np.int64)
        _load(self.selector, state["selector"])
        if self.scores is not None:
            self.scores.load_state_dict(state.get("scores"))


class PruneStage:
    """`prune` (InfoBatch): at its due boundaries, InfoBatch's epoch plan (`epoch_plan` of
    dataflex/train/selector/infobatch.py, the core trainer=infobatch uses) over the pool it receives: the ids
    whose score is below the pool's mean score are "well learned", a random `prune_ratio` share of them is
    skipped until the next decision and the kept ones' losses are multiplied by 1 / (1 - prune_ratio) when
    they are trained (`factors`). A score is the id's latest training loss (the per-sample losses the
    pipeline gathers after every step, `observe`). An id not trained yet has no loss: it is kept, with weight
    1, and left out of the mean (the official code starts every id at 3.0 but trains all of them in its
    first, unpruned epoch before any pruning; deciding per window, an untrained id would otherwise be judged
    by that constant). A pool changed by an upstream filter is judged anew at once. From delta x max_steps on
    (decided at the first boundary there), the pool passes unpruned with weight 1 (the annealing).

    Deviations from InfoBatch (besides trainer=infobatch's, step-based annealing and a fixed step budget):
    the official code re-prunes once per epoch of the whole dataset; here the decision is re-made at the
    stage's boundaries (`every`, default one window), over the pool the upstream filters left. With `every`
    = the steps of one pass over the pruned pool and a uniform or reorder draw, it is the official epoch."""

    def __init__(
        self, spec: StageSpec, config: InfoBatchPruning, num_items: int, seed: int, total: int
    ) -> None:
        self.spec, self.config, self.total = spec, config, int(total)
        self.settings = InfoBatchSettings(prune_ratio=config.prune_ratio, seed=seed)
        self.scores = np.full(int(num_items), np.nan, dtype=np.float64)
        """Each id's latest training loss (NaN: not trained yet)."""
        self.weights = np.ones(int(num_items), dtype=np.float64)
        """Each id's loss factor under the decision in force (1 / keep ratio for kept well-learned ids)."""
        self.kept: np.ndarray | None = None
        self.judged: np.ndarray | None = None
        """The pool the decision in force was made over (a changed upstream pool is judged anew: an id
        the decision never saw is neither dropped nor kept by default)."""
        self.rounds = 0
        """Decisions made so far (the `epoch` that seeds InfoBatch's draws)."""
        self.annealed = False
        self.pruned = 0
        """Ids the decision in force skips (logged as pipeline/pruned)."""

    def apply(self, done: int, pool: np.ndarray, model: Any = None, kw: Any = None) -> np.ndarray:
        if not self.spec.active(done):
            return pool
        anneal = annealing_by_steps(done, self.total, self.config.delta)
        new_pool = self.judged is None or not np.array_equal(self.judged, pool)
        if self.spec.due(done) or new_pool or (anneal and not self.annealed):
            seen = pool[np.isfinite(self.scores[pool])]
            positions, weights = epoch_plan(self.scores[seen], self.rounds, self.settings, anneal=anneal)
            self.rounds, self.annealed, self.judged = self.rounds + 1, anneal, pool.copy()
            unseen = pool[~np.isfinite(self.scores[pool])]
            self.kept = np.union1d(unseen, seen[positions])
            self.weights = np.ones_like(self.weights)  # a new array: steps planned earlier keep theirs
            self.weights[seen] = weights
            self.pruned = len(pool) - len(self.kept)
        assert self.kept is not None
        return self.kept

    def factors(self, ids: np.ndarray) -> np.ndarray:
        """The loss factors of the trained ids (all 1 before the stage's warmup)."""
        return self.weights[np.asarray(ids, dtype=np.int64)]

    def observe(self, ids: np.ndarray, losses: np.ndarray) -> None:
        """The step's gathered per-sample training losses become the ids' scores (non-finite ones skipped)."""
        record_losses(self.scores, ids, losses)

    def state_dict(self) -> dict[str, Any]:
        return {
            "scores": self.scores.copy(),
            "weights": self.weights.copy(),
            "kept": None if self.kept is None else self.kept.copy(),
            "judged": None if self.judged is None else self.judged.copy(),
            "rounds": self.rounds,
            "annealed": self.annealed,
            "pruned": self.pruned,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["scores"]) != len(self.scores):
            raise ValueError(
                f"pipeline {self.spec.name}: the checkpoint's scores are for another training set"
            )
        self.scores = np.asarray(state["scores"], dtype=np.float64)
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.kept = None if state["kept"] is None else np.asarray(state["kept"], dtype=np.int64)
        self.judged = None if state["judged"] is None else np.asarray(state["judged"], dtype=np.int64)
        self.rounds, self.annealed = int(state["rounds"]), bool(state["annealed"])
        self.pruned = int(state["pruned"])


class DrawStage:
    """`select` with `mode: draw` (a budget-taker): at its due boundaries the selector picks `every` x global
    batch ids from the pool, shuffled by (seed, boundary) like dynamic_select's `shuffle` order; windows
    consume them in order."""

    def __init__(self, spec: StageSpec, selector: Any, seed: int) -> None:
        self.spec, self.selector, self.seed = spec, selector, seed
        self.queue: IndexListSampler | None = None
        self.scores: StageScores | None = None
        """Set by the trainer when a reorder stage orders by this stage's scores."""

    def draw(
        self, done: int, pool: np.ndarray, n: int, batch: int, model: Any, kw: dict[str, Any]
    ) -> np.ndarray:
        if self.spec.due(done) or self.queue is None or self.queue.remaining < n:
            k = max(n, self.spec.every * batch)
            chosen = _ids(self.selector.select(model, done, k, candidates=pool, **kw))
            if self.scores is not None:
                self.scores.record(chosen, self.selector)
            perm = np.random.default_rng([self.seed, 0xD8A7, done]).permutation(len(chosen))
            self.queue = IndexListSampler(chosen[perm])
        return self.queue.next(n)

    def state_dict(self) -> dict[str, Any]:
        return {
            "queue": None if self.queue is None else self.queue.state_dict(),
            "selector": _state(self.selector),
            "scores": None if self.scores is None else self.scores.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["queue"] is not None:
            self.queue = IndexListSampler([])
            self.queue.load_state_dict(state["queue"])
        _load(self.selector, state["selector"])
        if self.scores is not None:
            self.scores.load_state_dict(state.get("scores"))


class MixStage:
    """`mix` (a budget-taker): every window is drawn from the pool's rows of each domain by the current
    proportions (`ProportionSampler`: deficit rule, passes without replacement); at due boundaries the mixer
    sets new proportions from what it observed. A domain the filters emptied gets no slots (its share is
    spread over the others, logged)."""

    def __init__(self, spec: StageSpec, mixer: Any, manager: MixtureManager, data: Any, seed: int) -> None:
        self.spec, self.mixer, self.manager, self.data, self.seed = spec, mixer, manager, data, seed
        self.proportions = manager.proportions
        """The mixer's proportions in force; the stage owns them (its sampler, rebuilt per pool, draws by
        their feasible form) and the mixer reads them through `manager`, a read-only view."""
        manager.attach(self)
        self.sampler: ProportionSampler | None = None
        self.pool_version = -1
        self.last_stats: DomainStats | None = None

    def _sampler(self, pool: np.ndarray, version: int) -> ProportionSampler:
        if self.sampler is None or version != self.pool_version:
            domains = np.asarray(self.data.domain_ids)[pool]
            rows = [pool[domains == d] for d in range(len(self.manager.names))]
            proportions = self._feasible(self.manager.proportions, rows)
            self.sampler = ProportionSampler(
                rows,
                proportions.tolist(),
                seed=derived_seed(self.seed, version),
                domain_names=self.manager.names,
            )
            self.pool_version = version
        return self.sampler

    def _feasible(self, p: np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
        has = np.asarray([len(r) > 0 for r in rows])
        q = np.where(has, np.asarray(p, dtype=np.float64), 0.0)
        if q.sum() <= 0:
            q = has.astype(np.float64)
        if not has.all():
            empty = [n for n, h in zip(self.manager.names, has) if not h]
            logger.info(
                f"pipeline {self.spec.name}: domains {empty} have no ids in the pool; their share moves"
            )
        return q / q.sum()

    def draw(
        self, done: int, pool: np.ndarray, version: int, n: int, model: Any, eval_data: Any
    ) -> np.ndarray:
        sampler = self._sampler(pool, version)
        if self.spec.due(done):
            raw = self.mixer.mix(
                model, done, stats=self.last_stats, train_data=self.data, eval_data=eval_data
            )
            p = np.asarray(raw, dtype=np.float64).reshape(-1)
            check_proportion_values(
                p.tolist(), f"{type(self.mixer).__name__}.mix() output", self.manager.names
            )
            p = np.asarray(broadcast_object(p), dtype=np.float64)
            self.proportions = p.copy()
            sampler.set_proportions(self._feasible(p, sampler.domain_rows).tolist())
        return sampler.next(n)

    def observe(self, done: int, stats: DomainStats) -> None:
        self.last_stats = stats
        if done <= self.spec.warmup_step and not getattr(self.mixer, "observe_warmup", True):
            return
        if np.isfinite(stats.token_sum).all():
            self.mixer.observe(stats)

    def state_dict(self) -> dict[str, Any]:
        return {
            "proportions": self.manager.proportions.copy(),
            "sampler": None if self.sampler is None else self.sampler.state_dict(),
            "pool_version": self.pool_version,
            "mixer": _state(self.mixer),
            "stats": None if self.last_stats is None else dataclasses.asdict(self.last_stats),
        }

    def load_state_dict(self, state: dict[str, Any], pool: np.ndarray) -> None:
        self.proportions = np.asarray([float(x) for x in state["proportions"]], dtype=np.float64)
        if state["sampler"] is not None:
            self._sampler(pool, int(state["pool_version"])).load_state_dict(state["sampler"])
        _load(self.mixer, state["mixer"])
        stats = state.get("stats")
        self.last_stats = None if stats is None else DomainStats(**stats)


class ReorderStage:
    """`reorder`: a data-efficacy pattern over per-item scores (the model's loss from the signal cache, a
    data field, a file, or a select stage's scores of this run). As the budget-taker it orders the pool
    consume-once (`ReorderSampler`: every pool id once per epoch; at due boundaries the untrained rest is
    re-scored and re-ordered); otherwise it permutes each window the taker drew, seeded by the boundary."""

    def __init__(
        self,
        spec: StageSpec,
        pattern: ReorderSpec,
        static_scores: np.ndarray | None,
        stage_scores: StageScores | None = None,
    ) -> None:
        self.spec, self.pattern, self.static = spec, pattern, static_scores
        self.stage_scores = stage_scores
        """score_source: stage -- read like the losses (dynamic): each epoch and each due boundary takes the
        select stage's latest scores of the ids."""
        self.sampler: ReorderSampler | None = None
        self.pool_version = -1

    def scores(self, ids: np.ndarray, losses: Any, max_age: int | None = None) -> np.ndarray:
        if self.static is not None:
            return self.static[ids]
        if self.stage_scores is not None:
            return self.stage_scores(ids)
        return np.asarray(losses(ids, max_age), dtype=np.float64)

    def take(self, done: int, pool: np.ndarray, version: int, n: int, losses: Any) -> np.ndarray:
        if self.sampler is None or version != self.pool_version:
            static = None if self.static is None else self.static[pool]
            spec = dataclasses.replace(self.pattern, seed=derived_seed(self.pattern.seed, version))
            self.sampler = ReorderSampler(len(pool), spec, static_scores=static)
            self.pool_version = version
        elif self.spec.due(done) and self.static is None:
            rest = self.sampler.rest()
            if len(rest):
                self.sampler.reorder_rest(self.scores(pool[rest], losses))
        if self.sampler.needs_epoch_scores(n):
            self.sampler.set_epoch_scores(self.scores(pool, losses))
        return pool[self.sampler.next(n)]

    def order_window(self, done: int, ids: np.ndarray, losses: Any) -> np.ndarray:
        """A window drawn by another stage, permuted by the pattern (fresh scores at due boundaries, any
        cached ones otherwise)."""
        scores = self.scores(ids, losses, None if self.spec.due(done) else np.iinfo(np.int64).max)
        spec = dataclasses.replace(self.pattern, seed=derived_seed(self.pattern.seed, done))
        return ids[reorder(scores, spec)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": None if self.sampler is None else self.sampler.state_dict(),
            "pool_version": self.pool_version,
        }

    def load_state_dict(self, state: dict[str, Any], pool: np.ndarray) -> None:
        if state["sampler"] is not None:
            self.pool_version = int(state["pool_version"])
            spec = dataclasses.replace(self.pattern, seed=derived_seed(self.pattern.seed, self.pool_version))
            static = None if self.static is None else self.static[pool]
            self.sampler = ReorderSampler(len(pool), spec, static_scores=static)
            self.sampler.load_state_dict(state["sampler"])


class UniformDraw:
    """No stage takes the budget: epochs over the pool in a seeded random order (a new pool starts anew)."""

    name = "uniform"

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.sampler: EpochSampler | None = None
        self.pool_version = -1

    def take(self, pool: np.ndarray, version: int, n: int) -> np.ndarray:
        if self.sampler is None or version != self.pool_version:
            self.sampler = EpochSampler(len(pool), seed=derived_seed(self.seed, version))
            self.pool_version = version
        return pool[self.sampler.next(n)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": None if self.sampler is None else self.sampler.state_dict(),
            "version": self.pool_version,
        }

    def load_state_dict(self, state: dict[str, Any], pool: np.ndarray) -> None:
        if state["sampler"] is not None:
            self.pool_version = int(state["version"])
            self.sampler = EpochSampler(len(pool), seed=derived_seed(self.seed, self.pool_version))
            self.sampler.load_state_dict(state["sampler"])


def _state(component: Any) -> Any:
    get = getattr(component, "state_dict", None)
    return get() if callable(get) else None


def _load(component: Any, state: Any) -> None:
    load = getattr(component, "load_state_dict", None)
    if state is not None and callable(load):
        load(state)
