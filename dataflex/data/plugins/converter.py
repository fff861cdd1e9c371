"""`DataConverterPlugin`: turn a raw row into the standard sample format.

Standard sample (spec 003, LLaMA-Factory v1)::

    {"messages": [{"role": "system"|"user"|"assistant"|"tool",
                   "content": [{"type": "text", "value": str}, ...],
                   "loss_weight": float}, ...]}

Prompt turns (system, user, tool) get ``loss_weight`` 0.0 and assistant turns 1.0. Preference data
(``pair``) yields ``chosen_messages`` / ``rejected_messages`` instead of ``messages``. Other content
types: ``tool_calls`` (an assistant's function call, JSON text) and ``tools`` (the tool schema, added to
the system turn), as in LLaMA-Factory v1.

A converter is a function ``fn(row, **options) -> dict``; ``options`` are the dataset's ``columns`` /
``tags`` maps from dataset_info (LLaMA-Factory v0 spelling) when given. Register your own from any
module, without editing DataFlex::

    from dataflex.data import register_converter

    @register_converter("my_format")
    def my_format(row, **options):
        return {"messages": [...]}

and name it in dataset_info (``converter: my_format``) after importing that module.

Converters raise `MissingFieldError` / `RowFormatError` for bad rows; the engine adds dataset and row.
Converters never drop turns silently: a role they cannot map is an error, not a skipped message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import DataError, MissingFieldError, RowFormatError

Converter = Callable[..., dict[str, Any]]
_CONVERTERS: dict[str, Converter] = {}


_OPTION_KEYS: dict[str, dict[str, frozenset[str]]] = {}


def register_converter(
    name: str, columns: Iterable[str] | None = None, tags: Iterable[str] | None = None
) -> Callable[[Converter], Converter]:
    """Decorator registering ``fn`` as converter ``name`` (re-registering a name replaces it).

    `columns` / `tags`: the keys this converter understands in dataset_info's ``columns`` / ``tags`` maps;
    when given, other keys are rejected at config time instead of being ignored."""

    def deco(fn: Converter) -> Converter:
        _CONVERTERS[name] = fn
        _OPTION_KEYS[name] = {
            k: frozenset(v) for k, v in (("columns", columns), ("tags", tags)) if v is not None
        }
        return fn

    return deco


def check_converter_options(name: str, options: Mapping[str, Any]) -> None:
    """Reject ``columns``/``tags`` keys the converter would not use (e.g. LLaMA-Factory's multimodal
    ``images`` column), naming them and the accepted ones."""
    declared = _OPTION_KEYS.get(name, {})
    for kind in ("columns", "tags"):
        given = options.get(kind)
        if not given:
            continue
        if kind not in declared:
            if name in _BUILTIN:
                raise DataError(f"converter {name!r} takes no `{kind}`")
            continue
        unknown = sorted(set(given) - declared[kind])
        if unknown:
            raise DataError(
                f"converter {name!r} does not use `{kind}` key(s) {unknown} (multimodal and KTO "
                f"columns are not supported); accepted: {sorted(declared[kind])}"
            )


def get_converter(name: str) -> Converter:
    """The converter registered as ``name``; an unknown name lists the registered ones."""
    try:
        return _CONVERTERS[name]
    except KeyError:
        raise DataError(
            f"Unknown converter {name!r}. Registered converters: {sorted(_CONVERTERS)}. Fix the `converter` "
            "key in dataset_info, or register yours with @dataflex.data.register_converter(name) in a "
            "module that is imported before the DataEngine is built."
        ) from None


def list_converters() -> list[str]:
    return sorted(_CONVERTERS)


def message(role: str, text: Any, loss_weight: float | None = None, kind: str = "text") -> dict[str, Any]:
    """One standard message with a single content part; the weight defaults to 1.0 for assistant turns."""
    if loss_weight is None:
        loss_weight = 1.0 if role == "assistant" else 0.0
    return {"role": role, "content": [{"type": kind, "value": text}], "loss_weight": float(loss_weight)}


def _get(row: Mapping[str, Any], key: str, *, required: bool = True, default: Any = None) -> Any:
    if key in row and row[key] is not None:
        return row[key]
    if required:
        raise MissingFieldError(key)
    return default


def _text(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    raise RowFormatError(f"field {field!r} must be a string, got {type(value).__name__}: {value!r:.80}")


def _weight(value: Any, where: str, role: str) -> float:
    if value is None:
        return 1.0 if role == "assistant" else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise RowFormatError(f"{where}.loss_weight must be a finite number >= 0, got {value!r:.80}")
    return float(value)


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------- alpaca
ALPACA_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "system": "system",
    "history": "history",
    "chosen": "chosen",
    "rejected": "rejected",
}


def _alpaca_prompt_turns(row: Mapping[str, Any], cols: Mapping[str, str]) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    system = _get(row, cols["system"], required=False, default="")
    if _text(system, cols["system"]):
        msgs.append(message("system", system))
    history = _get(row, cols["history"], required=False, default=[])
    if not isinstance(history, (list, tuple)):
        raise RowFormatError(f"field {cols['history']!r} must be a list of [query, response] pairs")
    for turn_no, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RowFormatError(
                f"{cols['history']}[{turn_no}] must be a [query, response] pair, got {pair!r:.80}"
            )
        msgs.append(message("user", _text(pair[0], f"{cols['history']}[{turn_no}][0]")))
        msgs.append(message("assistant", _text(pair[1], f"{cols['history']}[{turn_no}][1]")))
    instruction = _text(_get(row, cols["prompt"]), cols["prompt"])
    query = _text(_get(row, cols["query"], required=False, default=""), cols["query"])
    msgs.append(message("user", instruction + "\n" + query if query else instruction))
    return msgs


@register_converter("alpaca", columns=ALPACA_COLUMNS)
def alpaca_converter(
    row: Mapping[str, Any], columns: Mapping[str, str] | None = None, ranking: bool = False, **_: Any
) -> dict[str, Any]:
    """Alpaca: ``instruction`` (+ ``"\\n" + input`` when non-empty) → user, ``output`` → assistant,
    optional ``system`` and ``history`` ([[query, response], ...], earlier turns). With ``ranking`` (a
    LLaMA-Factory v0 preference dataset) the ``chosen``/``rejected`` responses give a pair sample."""
    cols = {**ALPACA_COLUMNS, **(columns or {})}
    prompt = _alpaca_prompt_turns(row, cols)
    if ranking:
        chosen = _text(_get(row, cols["chosen"]), cols["chosen"])
        rejected = _text(_get(row, cols["rejected"]), cols["rejected"])
        return {
            "chosen_messages": prompt + [message("assistant", chosen)],
            "rejected_messages": _copy(prompt) + [message("assistant", rejected)],
        }
    response = _get(row, cols["response"])
    return {"messages": prompt + [message("assistant", _text(response, cols["response"]))]}


def _copy(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "content": [dict(c) for c in m["content"]]} for m in msgs]


# -------------------------------------------------------------------------------------------- sharegpt
SHAREGPT_COLUMNS = {
    "messages": "conversations",
    "system": "system",
    "tools": "tools",
    "chosen": "chosen",
    "rejected": "rejected",
}
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}


def _sharegpt_turn(turn: Any, i: int, field: str, tags: Mapping[str, str]) -> dict[str, Any]:
    if not isinstance(turn, Mapping):
        raise RowFormatError(f"{field}[{i}] must be an object, got {turn!r:.80}")
    if tags["role_tag"] not in turn:
        raise MissingFieldError(f"{field}[{i}].{tags['role_tag']}")
    if tags["content_tag"] not in turn:
        raise MissingFieldError(f"{field}[{i}].{tags['content_tag']}")
    tag, value = turn[tags["role_tag"]], turn[tags["content_tag"]]
    if not isinstance(tag, str):
        raise RowFormatError(f"{field}[{i}].{tags['role_tag']} must be a string, got {tag!r:.80}")
    if tag == tags["function_tag"]:
        return message("assistant", _json_text(value), kind="tool_calls")
    roles = {
        tags["user_tag"]: "user",
        tags["assistant_tag"]: "assistant",
        tags["observation_tag"]: "tool",
        tags["system_tag"]: "system",
    }
    if tag not in roles:
        raise RowFormatError(
            f"{field}[{i}] has unknown role {tag!r}; expected one of "
            f"{sorted([*roles, tags['function_tag']])} (set `tags` in dataset_info to map yours)"
        )
    return message(roles[tag], _text(value, f"{field}[{i}].{tags['content_tag']}"))


@register_converter("sharegpt", columns=SHAREGPT_COLUMNS, tags=SHAREGPT_TAGS)
def sharegpt_converter(
    row: Mapping[str, Any],
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    ranking: bool = False,
    **_: Any,
) -> dict[str, Any]:
    """ShareGPT: ``conversations`` of ``{"from", "value"}`` turns (human/gpt/observation/function_call/
    system, renamable with ``tags``), optional ``system`` and ``tools`` columns. With ``ranking`` the
    ``chosen``/``rejected`` columns hold the final assistant turn of each side."""
    cols = {**SHAREGPT_COLUMNS, **(columns or {})}
    tg = {**SHAREGPT_TAGS, **(tags or {})}
    turns = _get(row, cols["messages"])
    if not isinstance(turns, (list, tuple)):
        raise RowFormatError(
            f"field {cols['messages']!r} must be a list of turns, got {type(turns).__name__}"
        )
    msgs = [_sharegpt_turn(t, i, cols["messages"], tg) for i, t in enumerate(turns)]
    system = _get(row, cols["system"], required=False, default="")
    if _text(system, cols["system"]):
        if msgs and msgs[0]["role"] == "system":
            raise RowFormatError(f"both a {cols['system']!r} column and a system turn are given; keep one")
        msgs.insert(0, message("system", system))
    _attach_tools(msgs, _get(row, cols["tools"], required=False, default=None))
    if ranking:
        chosen = _sharegpt_turn(_get(row, cols["chosen"]), 0, cols["chosen"], tg)
        rejected = _sharegpt_turn(_get(row, cols["rejected"]), 0, cols["rejected"], tg)
        return {"chosen_messages": msgs + [chosen], "rejected_messages": _copy(msgs) + [rejected]}
    if not msgs:
        raise RowFormatError(f"field {cols['messages']!r} is an empty conversation")
    return {"messages": msgs}


def _attach_tools(msgs: list[dict[str, Any]], tools: Any) -> None:
    """Put a tool schema into the system turn (creating one), as LLaMA-Factory v1 does."""
    if not tools:
        return
    part = {"type": "tools", "value": _json_text(tools)}
    if msgs and msgs[0]["role"] == "system":
        msgs[0]["content"].append(part)
    else:
        msgs.insert(0, {"role": "system", "content": [part], "loss_weight": 0.0})


# ---------------------------------------------------------------------------------------------- openai
OPENAI_ROLES = ("system", "user", "assistant", "tool")


def _openai_content(content: Any, where: str) -> list[dict[str, Any]]:
    """OpenAI content: a string, or a list of parts ``{"type": "text", "text": ...}``."""
    if isinstance(content, str):
        return [{"type": "text", "value": content}]
    if isinstance(content, (list, tuple)):
        parts = []
        for j, part in enumerate(content):
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise RowFormatError(
                    f"{where}.content[{j}] must be {{'type': 'text', 'text': str}}, got {part!r:.80}"
                )
            parts.append({"type": "text", "value": part["text"]})
        return parts
    raise RowFormatError(f"{where}.content must be a string or a list of text parts, got {content!r:.80}")


def _openai_messages(turns: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(turns, (list, tuple)):
        raise RowFormatError(f"field {field!r} must be a list of messages, got {type(turns).__name__}")
    msgs = []
    for i, turn in enumerate(turns):
        where = f"{field}[{i}]"
        if not isinstance(turn, Mapping):
            raise RowFormatError(f"{where} must be an object, got {turn!r:.80}")
        if "role" not in turn:
            raise MissingFieldError(f"{where}.role")
        role = turn["role"]
        if not isinstance(role, str) or role not in OPENAI_ROLES:
            raise RowFormatError(f"{where}.role is {role!r}; expected one of {list(OPENAI_ROLES)}")
        content = [] if turn.get("content") is None else _openai_content(turn["content"], where)
        if turn.get("tool_calls"):
            content.append({"type": "tool_calls", "value": _json_text(turn["tool_calls"])})
        if not content:
            raise MissingFieldError(f"{where}.content")
        msgs.append(
            {"role": role, "content": content, "loss_weight": _weight(turn.get("loss_weight"), where, role)}
        )
    return msgs


@register_converter("openai", columns=("messages", "tools"))
def openai_converter(
    row: Mapping[str, Any], columns: Mapping[str, str] | None = None, **_: Any
) -> dict[str, Any]:
    """OpenAI chat: ``messages`` of ``{"role", "content"}`` (content a string or text parts; assistant
    ``tool_calls`` become a ``tool_calls`` part); optional ``tools`` column and per-turn ``loss_weight``."""
    cols = {"messages": "messages", "tools": "tools", **(columns or {})}
    msgs = _openai_messages(_get(row, cols["messages"]), cols["messages"])
    if not msgs:
        raise RowFormatError(f"field {cols['messages']!r} is an empty conversation")
    _attach_tools(msgs, _get(row, cols["tools"], required=False, default=None))
    return {"messages": msgs}


# ------------------------------------------------------------------------------------------------ pair
@register_converter("pair", columns=("prompt", "chosen", "rejected", "system"))
def pair_converter(
    row: Mapping[str, Any], columns: Mapping[str, str] | None = None, **_: Any
) -> dict[str, Any]:
    """Preference pair: ``chosen`` and ``rejected`` are OpenAI message lists (the full conversations, as
    in HuggingFaceH4 datasets) or plain response strings that follow an optional ``prompt`` (a string or
    a message list) and optional ``system``. Yields ``chosen_messages`` and ``rejected_messages``."""
    cols = {
        "prompt": "prompt",
        "chosen": "chosen",
        "rejected": "rejected",
        "system": "system",
        **(columns or {}),
    }
    prompt_val = _get(row, cols["prompt"], required=False, default=None)
    if prompt_val is None:
        prompt: list[dict[str, Any]] = []
    elif isinstance(prompt_val, str):
        prompt = [message("user", prompt_val)]
    else:
        prompt = _openai_messages(prompt_val, cols["prompt"])
    system = _text(_get(row, cols["system"], required=False, default=""), cols["system"])
    if system:
        prompt.insert(0, message("system", system))

    def side(key: str) -> list[dict[str, Any]]:
        value = _get(row, cols[key])
        tail = [message("assistant", value)] if isinstance(value, str) else _openai_messages(value, cols[key])
        out = _copy(prompt) + tail
        if not out or out[-1]["role"] != "assistant":
            raise RowFormatError(f"field {cols[key]!r} must end with an assistant turn")
        return out

    return {"chosen_messages": side("chosen"), "rejected_messages": side("rejected")}


# ------------------------------------------------------------------------------------------------ text
def text_column(columns: Mapping[str, str] | None) -> str:
    """The column the `text` converter reads (``columns.prompt``, else ``columns.text``, else ``text``); the
    token store reads the same column straight from Arrow."""
    return (columns or {}).get("prompt", (columns or {}).get("text", "text"))


@register_converter("text", columns=("text", "prompt"))
def text_converter(
    row: Mapping[str, Any], columns: Mapping[str, str] | None = None, **_: Any
) -> dict[str, Any]:
    """Plain text (pre-training): the ``text`` column becomes one assistant message, loss_weight 1.0."""
    key = text_column(columns)
    return {"messages": [message("assistant", _text(_get(row, key), key), 1.0)]}


# ------------------------------------------------------------------------------------------ standard
@register_converter("standard")
def standard_converter(row: Mapping[str, Any], **_: Any) -> dict[str, Any]:
    """Rows already in the standard format (``messages`` with content parts, or chosen/rejected); checked,
    not changed. Used when a dataset names no converter."""
    if "chosen_messages" in row or "rejected_messages" in row:
        return {
            "chosen_messages": _standard_messages(_get(row, "chosen_messages"), "chosen_messages"),
            "rejected_messages": _standard_messages(_get(row, "rejected_messages"), "rejected_messages"),
        }
    return {"messages": _standard_messages(_get(row, "messages"), "messages")}


def _standard_messages(turns: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(turns, (list, tuple)) or not turns:
        raise RowFormatError(f"field {field!r} must be a non-empty list of messages")
    out = []
    for i, turn in enumerate(turns):
        where = f"{field}[{i}]"
        if not isinstance(turn, Mapping):
            raise RowFormatError(f"{where} must be an object")
        for key in ("role", "content"):
            if key not in turn:
                raise MissingFieldError(f"{where}.{key}")
        if not isinstance(turn["role"], str) or turn["role"] not in OPENAI_ROLES:
            raise RowFormatError(f"{where}.role is {turn['role']!r}; expected one of {list(OPENAI_ROLES)}")
        content = turn["content"]
        if isinstance(content, str):  # tolerate the OpenAI spelling in an otherwise standard file
            content = [{"type": "text", "value": content}]
        if (
            not isinstance(content, (list, tuple))
            or not content
            or not all(
                isinstance(p, Mapping)
                and isinstance(p.get("type"), str)
                and "value" in p
                and (p["type"] != "text" or isinstance(p["value"], str))
                for p in content
            )
        ):
            raise RowFormatError(
                f"{where}.content must be a non-empty list of {{'type', 'value'}} parts "
                "(text values are strings)"
            )
        out.append(
            {
                "role": turn["role"],
                "content": [dict(p) for p in content],
                "loss_weight": _weight(turn.get("loss_weight"), where, turn["role"]),
            }
        )
    return out


_BUILTIN = frozenset(_CONVERTERS)
