"""Each converter on hand-written rows, including edge cases; a user plugin from the user's own module."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from data_helpers import write_jsonl

from dataflex.data import DataArguments, DataEngine, DataError, list_converters
from dataflex.data.errors import MissingFieldError, RowFormatError
from dataflex.data.plugins.converter import get_converter


def turns(sample: dict, key: str = "messages") -> list[tuple]:
    return [
        (m["role"], [(c["type"], c["value"]) for c in m["content"]], m["loss_weight"]) for m in sample[key]
    ]


def T(v: str) -> list[tuple[str, str]]:  # noqa: N802 - tiny helper
    return [("text", v)]


def test_builtin_converters_registered() -> None:
    assert {"alpaca", "sharegpt", "openai", "pair", "text", "standard"} <= set(list_converters())


# ------------------------------------------------------------------------------------------- alpaca
def test_alpaca_basic_and_empty_input() -> None:
    alpaca = get_converter("alpaca")
    assert turns(alpaca({"instruction": "Do", "input": "this", "output": "done"})) == [
        ("user", T("Do\nthis"), 0.0),
        ("assistant", T("done"), 1.0),
    ]
    assert turns(alpaca({"instruction": "Do", "input": "", "output": "done"}))[0] == ("user", T("Do"), 0.0)
    assert turns(alpaca({"instruction": "Do", "output": "done"}))[0] == ("user", T("Do"), 0.0)
    assert turns(alpaca({"instruction": "Do", "input": None, "output": ""}))[1] == ("assistant", T(""), 1.0)


def test_alpaca_system_and_history() -> None:
    s = get_converter("alpaca")(
        {
            "system": "Sys",
            "history": [["h1", "r1"], ["h2", "r2"]],
            "instruction": "q",
            "input": "",
            "output": "a",
        }
    )
    assert turns(s) == [
        ("system", T("Sys"), 0.0),
        ("user", T("h1"), 0.0),
        ("assistant", T("r1"), 1.0),
        ("user", T("h2"), 0.0),
        ("assistant", T("r2"), 1.0),
        ("user", T("q"), 0.0),
        ("assistant", T("a"), 1.0),
    ]
    assert turns(get_converter("alpaca")({"system": "", "instruction": "q", "output": "a"}))[0][0] == "user"


def test_alpaca_errors() -> None:
    alpaca = get_converter("alpaca")
    with pytest.raises(MissingFieldError, match="'output'"):
        alpaca({"instruction": "q"})
    with pytest.raises(MissingFieldError, match="'instruction'"):
        alpaca({"output": "a"})
    with pytest.raises(RowFormatError, match="'output' must be a string"):
        alpaca({"instruction": "q", "output": 3})
    with pytest.raises(RowFormatError, match=r"history\[0\]"):
        alpaca({"instruction": "q", "output": "a", "history": [["only one"]]})


def test_alpaca_custom_columns() -> None:
    s = get_converter("alpaca")({"q": "Q", "a": "A"}, columns={"prompt": "q", "response": "a"})
    assert turns(s) == [("user", T("Q"), 0.0), ("assistant", T("A"), 1.0)]


# ----------------------------------------------------------------------------------------- sharegpt
def test_sharegpt_multi_turn_tools_and_system() -> None:
    row = {
        "conversations": [
            {"from": "human", "value": "weather?"},
            {"from": "function_call", "value": '{"name": "w", "arguments": {}}'},
            {"from": "observation", "value": "sunny"},
            {"from": "gpt", "value": "It is sunny."},
        ],
        "system": "S",
        "tools": '[{"name": "w"}]',
    }
    assert turns(get_converter("sharegpt")(row)) == [
        ("system", [("text", "S"), ("tools", '[{"name": "w"}]')], 0.0),
        ("user", T("weather?"), 0.0),
        ("assistant", [("tool_calls", '{"name": "w", "arguments": {}}')], 1.0),
        ("tool", T("sunny"), 0.0),
        ("assistant", T("It is sunny."), 1.0),
    ]


def test_sharegpt_system_turn_and_errors() -> None:
    sg = get_converter("sharegpt")
    s = sg(
        {
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "a"},
            ]
        }
    )
    assert [m["role"] for m in s["messages"]] == ["system", "user", "assistant"]
    with pytest.raises(RowFormatError, match="unknown role 'robot'"):
        sg({"conversations": [{"from": "robot", "value": "x"}]})
    with pytest.raises(MissingFieldError, match=r"conversations\[1\].value"):
        sg({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt"}]})
    with pytest.raises(RowFormatError, match="empty conversation"):
        sg({"conversations": []})


# ------------------------------------------------------------------------------------------- openai
def test_openai_parts_tool_calls_and_tool_role() -> None:
    row = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]},
            {"role": "tool", "content": "42"},
            {"role": "assistant", "content": "done", "loss_weight": 0.5},
        ]
    }
    assert turns(get_converter("openai")(row)) == [
        ("system", T("S"), 0.0),
        ("user", [("text", "a"), ("text", "b")], 0.0),
        ("assistant", [("tool_calls", '[{"function": {"name": "f"}}]')], 1.0),
        ("tool", T("42"), 0.0),
        ("assistant", T("done"), 0.5),
    ]


def test_openai_errors() -> None:
    oa = get_converter("openai")
    with pytest.raises(RowFormatError, match=r"messages\[0\].role is 'bot'"):
        oa({"messages": [{"role": "bot", "content": "x"}]})
    with pytest.raises(MissingFieldError, match=r"messages\[0\].role"):
        oa({"messages": [{"content": "x"}]})
    with pytest.raises(MissingFieldError, match=r"messages\[0\].content"):
        oa({"messages": [{"role": "user"}]})
    with pytest.raises(RowFormatError, match="must be a list of messages"):
        oa({"messages": "hello"})


# --------------------------------------------------------------------------------------------- pair
def test_pair_full_conversations_and_prompt_plus_strings() -> None:
    pair = get_converter("pair")
    full = pair(
        {
            "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}],
        }
    )
    assert turns(full, "chosen_messages") == [("user", T("q"), 0.0), ("assistant", T("good"), 1.0)]
    assert turns(full, "rejected_messages")[-1] == ("assistant", T("bad"), 1.0)
    short = pair({"system": "S", "prompt": "q", "chosen": "good", "rejected": "bad"})
    assert turns(short, "chosen_messages") == [
        ("system", T("S"), 0.0),
        ("user", T("q"), 0.0),
        ("assistant", T("good"), 1.0),
    ]
    assert turns(short, "rejected_messages")[:2] == turns(short, "chosen_messages")[:2]
    with pytest.raises(MissingFieldError, match="'rejected'"):
        pair({"prompt": "q", "chosen": "good"})
    with pytest.raises(RowFormatError, match="must end with an assistant turn"):
        pair({"chosen": [{"role": "user", "content": "q"}], "rejected": "x"})


# --------------------------------------------------------------------------------------------- text
def test_text_and_standard() -> None:
    assert turns(get_converter("text")({"text": "plain"})) == [("assistant", T("plain"), 1.0)]
    assert turns(get_converter("text")({"text": ""})) == [("assistant", T(""), 1.0)]
    with pytest.raises(MissingFieldError):
        get_converter("text")({"body": "x"})
    std = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "value": "q"}], "loss_weight": 0.0},
            {"role": "assistant", "content": [{"type": "text", "value": "a"}]},
        ]
    }
    assert turns(get_converter("standard")(std)) == [("user", T("q"), 0.0), ("assistant", T("a"), 1.0)]


# ---------------------------------------------------------------------------------- through the engine
def test_missing_field_error_names_dataset_row_and_field(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"instruction": "q", "output": "a"}, {"instruction": "q"}])
    (tmp_path / "i.yaml").write_text("mine:\n  path: d.jsonl\n  converter: alpaca\n")
    with pytest.raises(DataError) as err:
        DataEngine(DataArguments(dataset=str(tmp_path / "i.yaml")))
    msg = str(err.value)
    assert "'mine'" in msg and "d.jsonl line 2" in msg and "'output'" in msg and "columns" in msg


def test_user_converter_plugin_from_own_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_plugins.py").write_text(
        textwrap.dedent("""
        from dataflex.data import register_converter

        @register_converter("qa_upper")
        def qa_upper(row, **options):
            return {"messages": [
                {"role": "user", "content": [{"type": "text", "value": row["q"]}], "loss_weight": 0.0},
                {"role": "assistant", "content": [{"type": "text", "value": row["a"].upper()}],
                 "loss_weight": 1.0}]}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    write_jsonl(tmp_path / "d.jsonl", [{"q": "x", "a": "yes"}])
    (tmp_path / "i.yaml").write_text("d:\n  path: d.jsonl\n  converter: qa_upper\n")
    with pytest.raises(DataError, match="Unknown converter 'qa_upper'"):
        DataEngine(DataArguments(dataset=str(tmp_path / "i.yaml")))
    import my_plugins  # noqa: F401  - the user's module registers its converter on import

    try:
        e = DataEngine(DataArguments(dataset=str(tmp_path / "i.yaml")))
        assert e[0]["messages"][1]["content"][0]["value"] == "YES"
    finally:
        from dataflex.data.plugins import converter

        converter._CONVERTERS.pop("qa_upper", None)
        sys.modules.pop("my_plugins", None)


def test_user_loader_plugin(tmp_path: Path) -> None:
    from dataflex.data import LoaderPlugin, register_loader
    from dataflex.data.plugins import loader
    from dataflex.data.plugins.loader import ListRows

    @register_loader("tsv", extensions=(".tsv",))
    class TsvLoader(LoaderPlugin):
        def load(self, path, ctx):
            lines = path.read_text().splitlines()
            return ListRows([{"text": ln.split("\t")[1]} for ln in lines], str(path))

    try:
        (tmp_path / "d.tsv").write_text("1\tone\n2\ttwo\n")
        e = DataEngine(DataArguments(dataset=str(tmp_path / "d.tsv")))
        assert [s["messages"][0]["content"][0]["value"] for s in e] == ["one", "two"]
    finally:
        loader._LOADERS.pop("tsv")
        loader._BY_EXTENSION.pop(".tsv")
