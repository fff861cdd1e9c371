"""Bad input: every malformed row gives the documented `DataError` naming where it is, or (with
``on_error=skip``) is skipped and counted; never another exception, never a silently lost row."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from data_helpers import alpaca_rows, write_jsonl
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dataflex.data import DataArguments, DataEngine, DataError


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps(alpaca_rows(1)[0]) + '\n\n{"instruction": "x",\n' + json.dumps(alpaca_rows(1)[0]) + "\n"
    )
    with pytest.raises(DataError, match=r"d.jsonl line 3: malformed JSON .*on_error=skip"):
        DataEngine(DataArguments(dataset=str(path)))


def test_on_error_skip_counts_and_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = alpaca_rows(4)
    lines = [
        json.dumps(good[0]),
        "not json",
        json.dumps(good[1]),
        "[1, 2]",
        json.dumps({"instruction": "q"}),
        json.dumps(good[2]),
        json.dumps(good[3]),
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    (tmp_path / "i.yaml").write_text("d: {path: d.jsonl, converter: alpaca}\n")
    with caplog.at_level(logging.WARNING):
        e = DataEngine(DataArguments(dataset=str(tmp_path / "i.yaml"), on_error="skip"))
    assert len(e) == 4 and [s["messages"][-1]["content"][0]["value"] for s in e] == [
        r["output"] for r in good
    ]
    where = [w for w, _ in e.skipped["d"]]
    assert where == [
        f"{tmp_path / 'd.jsonl'} line 2",
        f"{tmp_path / 'd.jsonl'} line 4",
        f"{tmp_path / 'd.jsonl'} line 5",
    ]
    assert "missing field 'output'" in e.skipped["d"][2][1]
    assert "skipped 3 malformed row(s)" in caplog.text


def test_empty_dataset_and_all_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"dataset 'e' .* is empty"):
        DataEngine(DataArguments(dataset=str(tmp_path / "e.jsonl")))
    (tmp_path / "b.jsonl").write_text("nope\n")
    with pytest.raises(DataError, match="empty after skipping bad rows"):
        DataEngine(DataArguments(dataset=str(tmp_path / "b.jsonl"), on_error="skip"))


def test_json_array_errors(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('[{"text": "a"},\n {"text": }]')
    with pytest.raises(DataError, match=r"a.json line 2: malformed JSON"):
        DataEngine(DataArguments(dataset=str(tmp_path / "a.json")))
    (tmp_path / "b.json").write_text('[{"text": "a"}, 3]')
    with pytest.raises(DataError, match=r"b.json element 2: expected a JSON object"):
        DataEngine(DataArguments(dataset=str(tmp_path / "b.json")))


def test_undetectable_format(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(DataError, match=r"cannot detect the format of rows with keys \['foo'\]"):
        DataEngine(DataArguments(dataset=str(tmp_path / "x.jsonl")))


# ----------------------------------------------------------------------------------- properties
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, width=16), st.text(max_size=5)
)
_values = st.recursive(
    _scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=6,
)
_KEYS = {
    "alpaca": ["instruction", "input", "output", "system", "history"],
    "sharegpt": ["conversations", "system", "tools"],
    "openai": ["messages", "tools"],
    "pair": ["prompt", "chosen", "rejected", "system"],
    "text": ["text"],
}


def _turn(converter: str) -> st.SearchStrategy:
    if converter == "sharegpt":
        return st.fixed_dictionaries(
            {},
            optional={
                "from": st.one_of(
                    st.sampled_from(["human", "gpt", "observation", "function_call", "system", "bot"]),
                    _scalars,
                ),
                "value": _values,
            },
        )
    return st.fixed_dictionaries(
        {},
        optional={
            "role": st.one_of(st.sampled_from(["user", "assistant", "system", "tool", "bot"]), _scalars),
            "content": _values,
            "loss_weight": _scalars,
            "tool_calls": _values,
        },
    )


def _row(converter: str) -> st.SearchStrategy:
    field_value = st.one_of(
        _values,
        st.lists(_turn(converter), max_size=3),
        st.lists(st.lists(st.text(max_size=3), min_size=1, max_size=3), max_size=2),
    )
    return st.dictionaries(st.sampled_from(_KEYS[converter]), field_value, max_size=len(_KEYS[converter]))


_txt = st.text(max_size=6)
_VALID = {
    "alpaca": st.fixed_dictionaries(
        {"instruction": _txt, "output": _txt},
        optional={
            "input": _txt,
            "system": _txt,
            "history": st.lists(st.tuples(_txt, _txt).map(list), max_size=2),
        },
    ),
    "sharegpt": st.fixed_dictionaries(
        {
            "conversations": st.lists(
                st.fixed_dictionaries(
                    {"from": st.sampled_from(["human", "gpt", "observation", "function_call"]), "value": _txt}
                ),
                min_size=1,
                max_size=4,
            )
        }
    ),
    "openai": st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["user", "assistant", "system", "tool"]), "content": _txt}
                ),
                min_size=1,
                max_size=4,
            )
        }
    ),
    "pair": st.fixed_dictionaries({"prompt": _txt, "chosen": _txt, "rejected": _txt}),
    "text": st.fixed_dictionaries({"text": _txt}),
}

_line = st.one_of(
    st.sampled_from(["{", "not json", "[1,", '{"a": }', "\x00", '"just a string"', "3", "null", "[]"]),
    st.text(max_size=8).filter(lambda s: "\n" not in s and "\r" not in s),
)


@pytest.mark.parametrize("converter", sorted(_KEYS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_arbitrary_rows_give_documented_errors(tmp_path: Path, converter: str, data: st.DataObject) -> None:
    item = st.one_of(
        _VALID[converter].map(lambda r: ("row", r)),
        _row(converter).map(lambda r: ("row", r)),
        _line.map(lambda s: ("raw", s)),
    )
    items = data.draw(st.lists(item, min_size=1, max_size=6))
    lines = [json.dumps(v) if kind == "row" else v for kind, v in items]
    path = tmp_path / f"{converter}-{data.draw(st.integers(0, 10**9))}.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
    info = tmp_path / f"{path.stem}.yaml"
    info.write_text(f"ds:\n  path: {path.name}\n  converter: {converter}\n")
    nonblank = sum(1 for ln in lines if ln.strip(" \t\r"))  # JSON whitespace only: blank

    try:
        strict = DataEngine(DataArguments(dataset=str(info)))
    except DataError as e:
        assert "'ds'" in str(e) or path.name in str(e)  # names the dataset or the file
        strict = None
    if strict is not None:  # accepted: every non-blank line became exactly one well-formed sample
        event("accepted")
        assert len(strict) == nonblank
        for s in strict:
            _check_sample(s)

    try:
        lenient = DataEngine(DataArguments(dataset=str(info), on_error="skip"))
    except DataError as e:
        assert "empty" in str(e) or "every row is malformed" in str(e)
        return
    skipped = len(lenient.skipped.get("ds", []))
    assert len(lenient) + skipped == nonblank  # nothing silently lost
    assert (skipped == 0) == (strict is not None)
    for s in lenient:
        _check_sample(s)


def _check_sample(s: dict) -> None:
    keys = ["chosen_messages", "rejected_messages"] if "chosen_messages" in s else ["messages"]
    assert s["_dataset_name"] == "ds" and s["_domain"] == "ds"
    for key in keys:
        assert s[key]
        for m in s[key]:
            assert m["role"] in ("system", "user", "assistant", "tool")
            assert isinstance(m["loss_weight"], float)
            assert m["content"] and all(isinstance(c["type"], str) for c in m["content"])
            assert all(isinstance(c["value"], str) for c in m["content"])
