"""Property test over config overrides: invalid values fail at validation naming the key; valid ones train."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf.errors import ValidationError

from dataflex.run import run, validate

SMALL = [
    "model.hidden_size=16",
    "model.intermediate_size=32",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
    "data.max_samples=16",
    "trainer.max_eval_samples_per_domain=2",
    "trainer.disable_tqdm=true",
    "trainer.save_final_model=false",
    "logger.plots=false",
]

NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])

# key -> (valid values, invalid values)
KEYS = {
    "trainer.num_train_epochs": (st.floats(0.01, 2.0), st.floats(-2.0, 0.0)),  # with max_steps <= 0 below
    "trainer.per_device_train_batch_size": (st.integers(1, 4), st.integers(-3, 0)),
    "trainer.gradient_accumulation_steps": (st.integers(1, 2), st.integers(-3, 0)),
    "trainer.warmup_ratio": (st.floats(0.0, 0.9), st.floats(1.0, 5.0)),
    "trainer.learning_rate": (st.floats(0.0, 1e-2), st.one_of(st.floats(-1.0, -1e-6), NON_FINITE)),
    "trainer.max_grad_norm": (st.floats(0.0, 2.0), NON_FINITE),
    "trainer.seed": (st.integers(0, 2**31), st.one_of(st.integers(-5, -1), st.just(2**32))),
    "trainer.logging_steps": (st.integers(0, 3), st.integers(-3, -1)),
    "trainer.eval_steps": (st.integers(0, 3), st.integers(-3, -1)),
    "trainer.lr_scheduler_type": (
        st.sampled_from(["linear", "cosine", "constant"]),
        st.sampled_from(["wavy", ""]),
    ),
    "data.cutoff_len": (st.integers(8, 64), st.integers(-4, 0)),
    "launcher.nproc_per_node": (st.just(1), st.integers(-2, 0)),
}


@st.composite
def overrides(draw):
    keys = draw(st.lists(st.sampled_from(sorted(KEYS)), min_size=1, max_size=4, unique=True))
    bad = draw(st.sets(st.sampled_from(keys), max_size=2))
    chosen = {k: draw(KEYS[k][1] if k in bad else KEYS[k][0]) for k in keys}
    # Epoch-based length only matters (and is only invalid) when max_steps <= 0.
    chosen["trainer.max_steps"] = 0 if "trainer.num_train_epochs" in bad else 2
    return chosen, bad


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=overrides())
def test_config_overrides_fail_by_name_or_train(compose, case):
    chosen, bad = case
    args = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in chosen.items()]
    if bad:
        with pytest.raises((ValueError, ValidationError)) as err:
            validate(compose(*SMALL, *args))
        assert any(k in str(err.value) for k in bad), (args, str(err.value))
        return
    cfg = compose(*SMALL, *args)
    with tempfile.TemporaryDirectory() as run_dir:
        summary = run(cfg, run_dir)
    assert summary["steps"] == chosen["trainer.max_steps"]


def _simplex(draw, k):
    raw = draw(st.lists(st.integers(1, 9), min_size=k, max_size=k))
    return [round(x / sum(raw), 6) for x in raw[:-1]] + [
        round(1 - sum(round(x / sum(raw), 6) for x in raw[:-1]), 6)
    ]


@st.composite
def mix_overrides(draw):
    """dynamic_mix schedule and proportion keys, each valid or invalid."""
    bad = draw(st.sets(st.sampled_from(["warmup_step", "update_step", "proportions"]), max_size=2))
    warmup = draw(st.integers(-3, -1)) if "warmup_step" in bad else draw(st.integers(0, 1))
    update = draw(st.integers(-2, 0)) if "update_step" in bad else 1
    if "proportions" in bad:
        kind = draw(st.sampled_from(["length", "negative", "sum"]))
        props = {"length": [0.5, 0.5], "negative": [0.6, 0.6, -0.2, 0.0, 0.0], "sum": [0.3] * 5}[kind]
    else:
        props = _simplex(draw, 5)
    args = [
        f"trainer.warmup_step={warmup}",
        f"trainer.update_step={update}",
        f"trainer.update_times={max(1, 2 - max(warmup, 0))}",
        "trainer.mixture_sample_rule=mixture",
        f"trainer.init_mixture_proportions=[{','.join(map(str, props))}]",
    ]
    keys = {
        "warmup_step": "trainer.warmup_step",
        "update_step": "trainer.update_step",
        "proportions": "trainer.init_mixture_proportions",
    }
    return args, {keys[b] for b in bad}


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mix_overrides())
def test_mix_schedule_and_proportions_fail_by_name_or_train(compose, case):
    args, bad = case
    cfg = compose(*SMALL, "trainer=dynamic_mix", "component=odm", *args)
    with tempfile.TemporaryDirectory() as run_dir:
        if bad:
            with pytest.raises((ValueError, ValidationError)) as err:
                validate(cfg)
                run(cfg, run_dir)  # some checks need the data's domains
            assert any(k in str(err.value) for k in bad), (args, str(err.value))
            return
        summary = run(cfg, run_dir)
    assert summary["steps"] == 2


# Regressions found by fault and bad-input testing (issue 15): each is refused at validation, before any data
# or model loads, naming the key (and, for unknown keys, the nearest valid names).
REFUSED = {
    "unknown_key_push_to_hub": (
        ["+trainer.push_to_hub=true"],
        r"trainer\.push_to_hub is not an option.*nearest",
    ),
    "unknown_key_hydra_hint": (["+trainer.no_such_option=1"], r"trainer\.no_such_option is not an option"),
    "unknown_key_typo": (["+trainer.learning_rat=1"], r"trainer\.learning_rat .*did you mean learning_rate"),
    "unknown_data_key": (["+data.cutof_len=8"], r"data\.cutof_len .*did you mean cutoff_len"),
    "unknown_component_key": (
        ["trainer=dynamic_mix", "component=odm", "+component.eta=1"],
        r"component\.eta is not an option",
    ),
    "max_grad_norm_nan": (["trainer.max_grad_norm=nan"], r"trainer\.max_grad_norm=nan is not a finite"),
    "learning_rate_nan": (["trainer.learning_rate=nan"], r"trainer\.learning_rate=nan is not a finite"),
    "learning_rate_inf": (["trainer.learning_rate=inf"], r"trainer\.learning_rate=inf is not a finite"),
    "odm_reward_scale_nan": (
        ["trainer=dynamic_mix", "component=odm", "component.reward_scale=nan"],
        r"component\.reward_scale=nan",
    ),
    "odm_reward_scale_inf": (
        ["trainer=dynamic_mix", "component=odm", "component.reward_scale=inf"],
        r"component\.reward_scale=inf",
    ),
    "doremi_eta_nan": (
        ["trainer=dynamic_mix", "component=doremi", "component.reference_model_path=/x", "component.eta=nan"],
        r"component\.eta=nan",
    ),
    "seed_negative": (["trainer.seed=-1"], r"trainer\.seed=-1 is out of range"),
    "data_seed_too_large": (["data.seed=4294967296"], r"data\.seed=4294967296 is out of range"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_input_regressions_are_refused_by_name(compose, case):
    overrides, message = REFUSED[case]
    with pytest.raises(ValueError, match=message):
        validate(compose(*overrides))


def _write_info(folder, entries: dict[str, dict], rows: dict[str, list[dict]]):
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for name, items in rows.items():
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in items))
    lines = []
    for name, entry in entries.items():
        lines.append(f"{name}:")
        lines += [f"  {k}: {v}" for k, v in entry.items()]
    (folder / "dataset_info.yaml").write_text("\n".join(lines) + "\n")
    return folder / "dataset_info.yaml"


ROWS = [{"instruction": f"say {i}", "output": f"word {i} " * 5} for i in range(12)]


def test_custom_data_without_a_dataset_is_refused(compose):
    with pytest.raises(ValueError, match=r"data\.dataset is empty; data=custom needs data\.dataset="):
        validate(compose("data=custom"))


def test_a_dataset_name_listed_twice_is_refused(tmp_path):
    from dataflex.data.dataset_info import read_info_file
    from dataflex.data.errors import DataError

    info = tmp_path / "dataset_info.yaml"
    info.write_text("math:\n  path: a.jsonl\nchat:\n  path: b.jsonl\nmath:\n  path: c.jsonl\n")
    with pytest.raises(DataError, match=r"'math' is listed twice \(lines 1 and 5\)"):
        read_info_file(info)
    info_json = tmp_path / "dataset_info.json"
    info_json.write_text('{"math": {"file_name": "a.jsonl"}, "math": {"file_name": "b.jsonl"}}')
    with pytest.raises(DataError, match="'math' is listed twice"):
        read_info_file(info_json)


def test_model_folder_without_tokenizer_files_is_refused(compose, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "max_position_embeddings": 64}')
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer files .*tokenizer_path"):
        validate(compose("model=hf", f"model.name_or_path={tmp_path}"))


def test_cutoff_len_above_the_model_positions(compose, tmp_path, caplog):
    validate(compose("model.max_position_embeddings=64", "data.cutoff_len=128"))  # rotary: a warning
    assert any("data.cutoff_len=128" in m and "maximum of 64 positions" in m for m in caplog.messages)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_positions": 32}')
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(
        ValueError, match=r"data\.cutoff_len=128 is above the model's maximum of 32 .*n_positions"
    ):
        validate(compose("model=hf", f"model.name_or_path={tmp_path}", "data.cutoff_len=128"))


def test_anchor_domains_empty_is_refused(compose):
    with pytest.raises(ValueError, match=r"component\.anchor_domains=\[\] names no anchor domain"):
        validate(compose("trainer=dynamic_weight", "component=adapt", "component.anchor_domains=[]"))


def test_pretrain_domain_shorter_than_a_block_is_named(tmp_path):
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData
    from dataflex.models.tiny import load_tokenizer

    info = _write_info(
        tmp_path,
        {
            "long": {"path": "long.jsonl", "converter": "alpaca"},
            "short": {"path": "short.jsonl", "converter": "alpaca"},
        },
        {"long.jsonl": ROWS, "short.jsonl": ROWS[:1]},
    )
    from dataflex.data.token_store import StoreSettings

    engine = DataEngine(DataArguments(dataset=str(info)))
    message = r"domain\(s\) shorter than one block of data\.cutoff_len=64 tokens \(short: \d+ tokens\)"
    with pytest.raises(ValueError, match=message):
        TokenizedData(engine, load_tokenizer(), cutoff_len=64, mode="pretrain")
    with pytest.raises(ValueError, match=message):  # the token store (what dataflex-run uses) says the same
        TokenizedData(
            engine,
            load_tokenizer(),
            cutoff_len=64,
            mode="pretrain",
            store=StoreSettings(cache_dir=str(tmp_path / "cache")),
        )


def test_blank_samples_are_counted_with_example_rows(tmp_path, caplog):
    from dataflex.data import DataArguments, DataEngine

    rows = [*ROWS[:3], {"instruction": "  ", "output": "\n"}, {"instruction": "", "output": " "}]
    info = _write_info(tmp_path, {"d": {"path": "d.jsonl", "converter": "alpaca"}}, {"d.jsonl": rows})
    DataEngine(DataArguments(dataset=str(info)))
    warning = [m for m in caplog.messages if "empty or whitespace" in m]
    assert len(warning) == 1 and "2 sample(s)" in warning[0] and "line 4" in warning[0], caplog.messages


def test_target_domain_of_a_dataset_without_eval_names_the_dataset(tmp_path):
    from dataflex.data import DataArguments, DataEngine
    from dataflex.data.processor import TokenizedData
    from dataflex.models.tiny import load_tokenizer
    from dataflex.train.selector.base_selector import SelectionContext
    from dataflex.train.selector.scoring import resolve_target

    info = _write_info(
        tmp_path,
        {
            "a": {"path": "a.jsonl", "eval": "a.jsonl", "converter": "alpaca"},
            "b": {"path": "b.jsonl", "converter": "alpaca"},
        },
        {"a.jsonl": ROWS, "b.jsonl": ROWS},
    )
    tok = load_tokenizer()
    args = DataArguments(dataset=str(info))
    train = TokenizedData(DataEngine(args), tok, 64)
    evald = TokenizedData(DataEngine(args, split="eval"), tok, 64)
    ctx = SelectionContext(train_data=train, eval_data=evald, target_domain="b")
    with pytest.raises(ValueError, match=r"target_domain=b: its dataset\(s\) \['b'\] declare no `eval:`"):
        resolve_target(ctx, selector="less", target_domain=None, target_dataset=None)
    assert len(resolve_target(ctx, selector="less", target_domain="a", target_dataset=None).ids) > 0
