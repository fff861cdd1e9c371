"""`trainer=pipeline`'s schema and the pipeline's validation rules (torch-free: run before any model loads).

A pipeline is a list of stages (`pipeline.stages`, presets `pipeline=<name>` in conf/pipeline/), each one an
existing component in a role:

- `select` (a selector): `mode: filter` keeps `keep_ratio` of the pool; `mode: draw` picks the batches (it
  takes the step budget);
- `mix` (a mixer): draws the batches from the pool by domain proportions (takes the budget);
- `reorder` (a pattern of dataflex/train/reorder): orders the pool (takes the budget when no other stage does)
  or else each planned window, by the model's loss, a data field, a file, or (`score_source: stage`,
  `score_stage: <name>`) the scores a select stage of this run gave its ids (LESS influence, ICONS votes);
- `weight` (a weighter): weights the per-sample losses; several stack multiplicatively;
- `prune` (`use: infobatch`): InfoBatch's unbiased pruning of the pool (a random `prune_ratio` share of the
  ids whose last training loss is below the pool's mean is skipped, the kept ones' losses are up-weighted by
  1 / (1 - prune_ratio), nothing is pruned from delta x max_steps on); it sits with the filters, before the
  budget-taker.

`use: <name>` starts a stage's component from the built-in option of that kind (the same schemas as
`component=<name>` under dynamic_select / dynamic_mix / dynamic_weight); `component: {...}` sets its keys, or
`component._target_` points at your own class. The rules (checked by `parse_stages`, each error names its
rule): index stages in the order select -> mix -> reorder; at most one stage takes the step budget (none: a
uniform draw from the pool); one mix, one reorder and one prune stage at most; filters and the prune stage
before the budget-taker; a prune stage never next to a `select mode: draw` budget-taker (its up-weighting is
unbiased only when every pool id is drawn alike); a stage's `warmup_step` and `every` lie on the plan's
window grid (multiples of `trainer.update_step`); unknown keys fail, naming the stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dataflex.config.reorder import SCORE_SOURCES
from dataflex.config.trainer import TrainingArguments

KINDS = ("select", "prune", "mix", "reorder", "weight")
INDEX_ORDER = {"select": 0, "prune": 0, "mix": 1, "reorder": 2}
"""Filters and the prune stage share the first place (they act on the pool in the order they are listed)."""
SELECT_MODES = ("filter", "draw")
STAGE_SOURCE = "stage"
"""A reorder stage's score_source that only a pipeline has: the scores a select stage of the same run gave
the ids it returned (`component.score_stage: <its name>`), e.g. LESS influence or ICONS votes."""
UNSCORED_SELECTORS = ("random",)
"""Built-in selectors that return ids without scores (no `last_scores`): not a score_stage."""
TOKEN_LEVEL_WEIGHTERS = ("rho1",)
"""Weighters the pipeline cannot stack: they weigh tokens, the pipeline multiplies per-sample weights."""
STAGE_KEYS = {
    "kind",
    "use",
    "name",
    "component",
    "mode",
    "keep_ratio",
    "budget",
    "warmup_step",
    "every",
    "enabled",
}


@dataclass
class PipelineTrainerConfig(TrainingArguments):
    """`trainer=pipeline`: every `update_step` steps the stages plan the next window of `update_step` global
    batches (select -> mix -> reorder), and weight stages weigh every step's losses."""

    _target_: str = "dataflex.train.trainer.pipeline.PipelineTrainer"
    stages: list[Any] = field(default_factory=list)
    """The stages, in order (conf/trainer/pipeline.yaml fills them from `pipeline.stages`)."""
    update_step: int = 5
    """Steps per planned window: the index stages run at window boundaries (after 0, U, 2U, ... steps)."""
    score_max_age: int = 0
    """Signals (per-sample losses) older than this many optimizer steps are recomputed; 0: reuse only what
    was computed at the same boundary (one pass shared by the stages), larger: reuse across boundaries."""
    share_signals: bool = True
    """False: every stage computes its own signals (what running the stages separately costs; benchmark)."""
    loss_reduction: str = "sample"
    """As dynamic_weight: the plain loss is the mean of per-sample token-mean losses, so uniform weights
    reproduce it and the loss scale does not jump when a weight stage starts."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.update_step <= 0:
            raise ValueError(f"trainer.update_step must be > 0, got {self.update_step}.")
        if self.score_max_age < 0:
            raise ValueError(f"trainer.score_max_age must be >= 0, got {self.score_max_age}.")
        if self.max_steps <= 0:
            raise ValueError("trainer=pipeline needs trainer.max_steps > 0 (the step budget).")
        parse_stages(self.stages, self.update_step)


@dataclass(frozen=True)
class StageSpec:
    """One validated stage."""

    index: int
    """Position in pipeline.stages (error messages name `pipeline.stages[<index>]`)."""
    kind: str
    name: str
    """Provenance label in plans and the ledger (default `<kind>:<use or class>`)."""
    use: str | None
    component: dict[str, Any]
    mode: str
    keep_ratio: float
    budget: bool
    """Takes the step budget: draws the batches of every window."""
    warmup_step: int
    every: int
    enabled: bool

    def due(self, done: int) -> bool:
        """The stage (re)decides at the boundary after `done` steps."""
        return self.enabled and done >= self.warmup_step and (done - self.warmup_step) % self.every == 0

    def active(self, done: int) -> bool:
        """Past its warmup: its decisions are in force."""
        return self.enabled and done >= self.warmup_step


def _fail(i: int, rule: str, message: str) -> ValueError:
    return ValueError(f"pipeline.stages[{i}]: {message} (rule: {rule}).")


def _builtin_schemas(kind: str) -> dict[str, type]:
    from dataflex.config.component import mix, select, weight
    from dataflex.config.infobatch import InfoBatchPruning

    prune: dict[str, type] = {"infobatch": InfoBatchPruning}
    return {"select": select.SCHEMAS, "mix": mix.SCHEMAS, "weight": weight.SCHEMAS, "prune": prune}.get(
        kind, {}
    )


def reorder_keys() -> set[str]:
    from dataflex.train.reorder.patterns import ReorderSpec

    return {f.name for f in dataclasses.fields(ReorderSpec)} | {
        "score_source",
        "score_field",
        "score_path",
        "score_stage",
    }


def component_config(kind: str, use: str | None, overrides: dict[str, Any], i: int) -> dict[str, Any]:
    """The stage's component keys: the built-in option `use` (its schema's defaults, value checks run) with
    `overrides` on top, or `overrides` alone (a `_target_` of the user's)."""
    if kind == "reorder":
        unknown = sorted(set(overrides) - reorder_keys())
        if unknown:
            raise _fail(
                i,
                "unknown keys",
                f"component.{unknown[0]} is not a reorder key; use {sorted(reorder_keys())}",
            )
        from dataflex.train.reorder.patterns import ReorderSpec

        spec_keys = {
            k: v for k, v in overrides.items() if k in {f.name for f in dataclasses.fields(ReorderSpec)}
        }
        try:
            ReorderSpec(**spec_keys)
        except ValueError as err:
            raise _fail(i, "reorder values", str(err)) from None
        source = overrides.get("score_source", "loss")
        sources = (*SCORE_SOURCES, STAGE_SOURCE)
        if source not in sources:
            raise _fail(
                i, "reorder values", f"component.score_source={source!r} is not one of {', '.join(sources)}"
            )
        needed = {"field": "score_field", "file": "score_path", STAGE_SOURCE: "score_stage"}.get(source)
        if needed and not overrides.get(needed):
            raise _fail(i, "reorder values", f"component.score_source={source} needs component.{needed}")
        return dict(overrides)
    if kind == "prune" and (use is None or overrides.get("_target_")):
        if overrides.get("_target_"):
            raise _fail(
                i, "a stage the trainer can use", "a prune stage takes use: infobatch, not component._target_"
            )
        use = "infobatch"
    if use is None:
        if not overrides.get("_target_"):
            raise _fail(i, "a component", f"a {kind} stage needs use: <name> or component._target_")
        return dict(overrides)
    schemas = _builtin_schemas(kind)
    if use not in schemas:
        raise _fail(
            i,
            "a stage the trainer can use",
            f"use={use!r} is not a built-in {kind} option; choose one of {sorted(schemas)}",
        )
    if kind == "weight" and use in TOKEN_LEVEL_WEIGHTERS:
        raise _fail(
            i,
            "a stage the trainer can use",
            f"the {use} weighter weighs tokens and pipeline weight stages multiply per-sample weights; use "
            "trainer=dynamic_weight component=rho1 for it",
        )
    schema = schemas[use]
    fields = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise _fail(
            i,
            "unknown keys",
            f"component.{unknown[0]} is not a key of {kind} {use!r}; it has {sorted(fields)}",
        )
    try:
        values = dataclasses.asdict(schema(**overrides))
    except ValueError as err:
        raise _fail(i, f"{kind} {use} values", str(err)) from None
    except TypeError as err:  # a required key (MISSING) left out
        raise _fail(i, "a component", str(err)) from None
    return values


def _stage(raw: Any, i: int, update_step: int) -> StageSpec:
    if not isinstance(raw, dict):
        raise _fail(i, "a stage is a mapping", f"got {raw!r}; write {{kind: select, use: loss, ...}}")
    unknown = sorted(set(raw) - STAGE_KEYS)
    if unknown:
        raise _fail(i, "unknown keys", f"{unknown[0]!r} is not a stage key; a stage has {sorted(STAGE_KEYS)}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise _fail(i, "a stage the trainer can use", f"kind={kind!r} is not one of {KINDS}")
    use = raw.get("use")
    component = component_config(kind, use, dict(raw.get("component") or {}), i)
    mode = raw.get("mode") or ("filter" if kind == "select" else "")
    if kind == "select" and mode not in SELECT_MODES:
        raise _fail(i, "select modes", f"mode={mode!r} is not one of {SELECT_MODES}")
    if kind != "select" and raw.get("mode"):
        raise _fail(i, "select modes", f"mode applies to select stages only (this is {kind})")
    if kind != "select" and "keep_ratio" in raw:
        raise _fail(
            i,
            "keep_ratio",
            f"keep_ratio applies to select filters (this is {kind}); a prune stage skips "
            "component.prune_ratio of the below-mean-loss ids",
        )
    keep_ratio = float(raw.get("keep_ratio", 0.5))
    if kind == "select" and mode == "filter" and not 0 < keep_ratio <= 1:
        raise _fail(i, "keep_ratio", f"keep_ratio must be in (0, 1], got {keep_ratio}")
    takes = kind == "mix" or (kind == "select" and mode == "draw")
    budget = raw.get("budget")
    if budget is True and (kind in ("weight", "prune") or mode == "filter"):
        raise _fail(i, "one budget-taker", f"a {kind} stage in this mode cannot take the step budget")
    if budget is False and takes:
        raise _fail(i, "one budget-taker", f"a {kind} stage ({mode or kind}) always draws the batches")
    warmup, every = int(raw.get("warmup_step", 0)), int(raw.get("every", update_step))
    if warmup < 0 or every <= 0:
        raise _fail(i, "stage schedule", f"warmup_step must be >= 0 and every > 0, got {warmup}, {every}")
    if kind != "weight" and (warmup % update_step or every % update_step):
        raise _fail(
            i,
            "stage schedule on the window grid",
            f"warmup_step={warmup} and every={every} must be multiples of trainer.update_step={update_step} "
            "(index stages decide at window boundaries)",
        )
    if kind == "reorder":
        label = str(component.get("pattern", "folding"))
    elif kind == "prune":
        use = use or "infobatch"
        label = use
    else:
        label = use or str(component["_target_"]).rsplit(".", 1)[-1]
    default_name = f"{mode}:{label}" if kind == "select" else f"{kind}:{label}"
    return StageSpec(
        index=i,
        kind=kind,
        name=str(raw.get("name") or default_name),
        use=use,
        component=component,
        mode=mode,
        keep_ratio=keep_ratio,
        budget=bool(takes or budget),
        warmup_step=warmup,
        every=every,
        enabled=bool(raw.get("enabled", True)),
    )


def parse_stages(stages: Any, update_step: int) -> list[StageSpec]:
    """Validates `pipeline.stages` (plain values or an OmegaConf list) and returns the stages; raises a
    ValueError naming the stage and the rule it breaks."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(stages, (DictConfig, ListConfig)):
        stages = OmegaConf.to_container(stages, resolve=True)
    if not stages:
        raise ValueError(
            "trainer=pipeline has no stages: choose a preset (pipeline=hierarchical|select_then_reorder|"
            "mix_then_weight|select_only|prune_then_mix) "
            "or set pipeline.stages=[{kind: select, use: loss, ...}]."
        )
    specs = [_stage(raw, i, update_step) for i, raw in enumerate(stages)]
    index = [s for s in specs if s.kind in INDEX_ORDER]
    for prev, cur in zip(index, index[1:]):
        if INDEX_ORDER[cur.kind] < INDEX_ORDER[prev.kind]:
            raise _fail(
                cur.index,
                "index stages in the order select -> mix -> reorder",
                f"this {cur.kind} stage comes after the {prev.kind} stage pipeline.stages[{prev.index}]",
            )
    for kind in ("mix", "reorder", "prune"):
        same = [s for s in specs if s.kind == kind]
        if len(same) > 1:
            raise _fail(same[1].index, f"one {kind} stage", f"a second {kind} stage")
    takers = [s for s in specs if s.budget and s.enabled]
    if len(takers) > 1:
        raise _fail(
            takers[1].index,
            "one budget-taker",
            f"{takers[0].name} (pipeline.stages[{takers[0].index}]) already takes the step budget; "
            "make one of them a filter (select mode: filter) or drop it",
        )
    for s in takers:
        later = [t for t in index if t.index > s.index and t.kind in ("select", "prune")]
        if later:
            raise _fail(
                later[0].index,
                "filters before the budget-taker",
                f"a {later[0].kind} stage after the budget-taker",
            )
    prune = [s for s in specs if s.kind == "prune" and s.enabled]
    draws = [s for s in takers if s.kind == "select"]
    if prune and draws:
        raise _fail(
            prune[0].index,
            "prune with an unbiased draw",
            "InfoBatch's 1 / (1 - prune_ratio) up-weighting is unbiased only if every pool id is drawn "
            f"alike, but {draws[0].name} (pipeline.stages[{draws[0].index}]) draws by its selector's own "
            "scores; make it a filter (mode: filter), or draw by a mix / reorder stage or uniformly",
        )
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"pipeline.stages: two stages are named {dup[0]!r}; give them distinct name: keys.")
    for s in specs:
        if s.kind == "reorder" and s.component.get("score_source") == STAGE_SOURCE:
            _check_score_stage(s, specs)
    return specs


def _check_score_stage(reorder: StageSpec, specs: list[StageSpec]) -> None:
    """A reorder stage ordering by another stage's scores: that stage is an enabled scoring select stage
    listed before it, and it has decided (warmup) by the time the reorder stage first acts."""
    name = reorder.component.get("score_stage")
    rule = "a score stage before the reorder"
    by_name = {s.name: s for s in specs}
    if name not in by_name:
        raise _fail(
            reorder.index,
            rule,
            f"component.score_stage={name!r} names no stage; the stages are {sorted(by_name)}",
        )
    source = by_name[name]
    if source.kind != "select" or not source.enabled or source.index > reorder.index:
        raise _fail(
            reorder.index,
            rule,
            f"component.score_stage={name!r} must be an enabled select stage listed before this one "
            f"(it is a {'disabled ' if not source.enabled else ''}{source.kind} stage, "
            f"pipeline.stages[{source.index}])",
        )
    if source.use in UNSCORED_SELECTORS:
        raise _fail(
            reorder.index,
            rule,
            f"component.score_stage={name!r}: the {source.use} selector gives its ids no scores",
        )
    if reorder.warmup_step < source.warmup_step:
        raise _fail(
            reorder.index,
            rule,
            f"warmup_step={reorder.warmup_step} is before {name!r} first decides (its warmup_step="
            f"{source.warmup_step}); give the reorder stage warmup_step >= {source.warmup_step}",
        )
