"""trainer=pipeline: invalid pipelines fail at validation (before any data or model loads), naming the stage
and the rule they break."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflex.config.pipeline import parse_stages
from dataflex.run import validate

FILTER = {"kind": "select", "use": "loss", "mode": "filter", "keep_ratio": 0.5}
DRAW = {"kind": "select", "use": "random", "mode": "draw"}
MIX = {"kind": "mix", "use": "odm"}
SAW = {"kind": "reorder", "component": {"pattern": "saw"}}
WEIGHT = {"kind": "weight", "use": "loss"}
PRUNE = {"kind": "prune", "use": "infobatch"}


def BY(stage: str) -> dict:  # noqa: N802 - reads like the other stage constants
    return {"kind": "reorder", "component": {"pattern": "saw", "score_source": "stage", "score_stage": stage}}


@pytest.mark.parametrize(
    "stages, rule, where",
    [
        ([DRAW, MIX], "one budget-taker", r"stages\[1\]"),
        ([SAW, FILTER], r"index stages in the order select -> mix -> reorder", r"stages\[1\]"),
        ([MIX, FILTER], r"index stages in the order select -> mix -> reorder", r"stages\[1\]"),
        ([{"kind": "perstep", "use": "loss"}], "a stage the trainer can use", r"stages\[0\]"),
        ([{"kind": "weight", "use": "rho1"}], "a stage the trainer can use", r"stages\[0\]"),
        ([{"kind": "select", "use": "spiral"}], "a stage the trainer can use", r"stages\[0\]"),
        ([{**FILTER, "keep_rate": 0.5}], "unknown keys", "keep_rate"),
        ([{**FILTER, "component": {"focuss": "high"}}], "unknown keys", "focuss"),
        ([{**SAW, "component": {"pattern": "saw", "windw": 3}}], "unknown keys", "windw"),
        ([{**FILTER, "keep_ratio": 1.5}], "keep_ratio", "keep_ratio"),
        ([{**FILTER, "component": {"focus": "top"}}], "select loss values", "component.focus"),
        ([{**MIX, "warmup_step": 3}], "stage schedule on the window grid", "warmup_step=3"),
        ([MIX, {**SAW}, {**SAW}], "one reorder stage", r"stages\[2\]"),
        ([{**FILTER, "budget": True}], "one budget-taker", "cannot take the step budget"),
        ([FILTER, DRAW, {**FILTER, "use": "random"}], "filters before the budget-taker", r"stages\[2\]"),
        ([{"kind": "mix"}], "a component", "use: <name>"),
        (
            [{**SAW, "component": {"pattern": "saw", "score_source": "field"}}],
            "reorder values",
            "score_field",
        ),
        # InfoBatch's prune stage: with the filters, before the budget-taker, never next to a draw selector
        ([MIX, PRUNE], r"index stages in the order select -> mix -> reorder", r"stages\[1\]"),
        ([DRAW, PRUNE], "filters before the budget-taker", r"a prune stage after the budget-taker"),
        ([PRUNE, DRAW], "prune with an unbiased draw", r"stages\[0\].*draw:random"),
        ([PRUNE, {**PRUNE, "name": "again"}], "one prune stage", r"stages\[1\]"),
        ([{**PRUNE, "keep_ratio": 0.5}], "keep_ratio", "component.prune_ratio"),
        ([{**PRUNE, "component": {"prune_ratio": 1.0}}], "prune infobatch values", "component.prune_ratio"),
        ([{**PRUNE, "component": {"ratio": 0.3}}], "unknown keys", "component.ratio"),
        ([{**PRUNE, "budget": True}], "one budget-taker", "cannot take the step budget"),
        ([{**PRUNE, "use": "ccs"}], "a stage the trainer can use", "ccs"),
        ([{"kind": "prune", "component": {"_target_": "x.Y"}}], "a stage the trainer can use", "_target_"),
        ([{**PRUNE, "every": 3}], "stage schedule on the window grid", "every=3"),
        # a reorder stage ordered by a select stage's scores (score_source: stage)
        (
            [FILTER, {"kind": "reorder", "component": {"score_source": "stage"}}],
            "reorder values",
            "score_stage",
        ),
        (
            [{"kind": "reorder", "component": {"score_source": "lossy"}}],
            "reorder values",
            "not one of field, file, loss, stage",
        ),
        ([FILTER, BY("filter:lss")], "a score stage before the reorder", "names no stage"),
        ([FILTER, MIX, BY("mix:odm")], "a score stage before the reorder", "must be an enabled select stage"),
        ([DRAW, BY("draw:random")], "a score stage before the reorder", "gives its ids no scores"),
        (
            [{**FILTER, "warmup_step": 10}, BY("filter:loss")],
            "a score stage before the reorder",
            "warmup_step >= 10",
        ),
    ],
)
def test_each_rule_fails_naming_it(stages, rule, where):
    with pytest.raises(ValueError) as err:
        parse_stages(stages, update_step=5)
    assert f"(rule: {rule.replace(chr(92), '')})" in str(err.value) or pytest.fail(str(err.value))
    assert __import__("re").search(where, str(err.value)), str(err.value)


def test_a_valid_pipeline_names_its_stages_and_its_budget_taker():
    specs = parse_stages(
        [FILTER, MIX, SAW, WEIGHT, {**WEIGHT, "name": "w2", "enabled": False}], update_step=5
    )
    assert [s.name for s in specs] == ["filter:loss", "mix:odm", "reorder:saw", "weight:loss", "w2"]
    assert [s.budget for s in specs] == [False, True, False, False, False]
    assert specs[0].component["focus"] == "medium"  # the built-in option's defaults, composed
    assert specs[0].component["_target_"].endswith("LossSelector")
    assert not specs[4].due(10) and specs[1].due(10) and not specs[1].due(7)
    prune = parse_stages([FILTER, {"kind": "prune"}, MIX], update_step=5)  # use: infobatch is the default
    assert [s.name for s in prune] == ["filter:loss", "prune:infobatch", "mix:odm"]
    assert prune[1].component == {"prune_ratio": 0.5, "delta": 0.875} and not prune[1].budget


def test_the_cli_config_is_validated_before_anything_loads(compose):
    cfg = compose("trainer=pipeline", "pipeline=hierarchical")
    validate(cfg)  # the preset is valid
    bad = compose(
        "trainer=pipeline",
        "pipeline=hierarchical",
        "pipeline.stages=[{kind: reorder, component: {pattern: saw}}, {kind: select, use: loss}]",
    )
    with pytest.raises(ValueError, match=r"rule: index stages in the order select -> mix -> reorder"):
        validate(bad)
    with pytest.raises(ValueError, match="has no stages"):
        validate(compose("trainer=pipeline"))
    with pytest.raises(ValueError, match="components live in stages"):
        validate(compose("trainer=pipeline", "pipeline=select_only", "component._target_=x.Y"))


PRESETS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "pipeline").glob("*.yaml"))


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "none"])
def test_every_preset_composes_and_validates(compose, preset):
    """The presets under conf/pipeline/ (each also trains in tests/pipeline/test_cli.py)."""
    cfg = compose("trainer=pipeline", f"pipeline={preset}")
    validate(cfg)
    assert parse_stages(cfg.pipeline.stages, update_step=cfg.trainer.update_step)
