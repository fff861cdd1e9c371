"""Named chat templates (`data.template`), in the formats LLaMA-Factory uses for the same names, plus the
jinja that `tokenizer.chat_template` gets so a saved tokenizer renders conversations the way the model was
trained (`apply_chat_template` at inference gives the training text).

Each template is a few format strings with a `{content}` slot. As in LLaMA-Factory, a user turn carries the
next assistant header (prompt tokens, masked), an assistant turn is `content` + its end-of-turn marker
(trained on), the system turn comes first (the template's default system when the sample has none). Deviation
from LLaMA-Factory: the tokenizer is not changed (no EOS replacement, no added stop tokens, so no embedding
resize); when a marker such as `<|im_end|>` is not one token of the vocabulary it is trained as its text
pieces and a warning says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dataflex.utils.logging import logger


@dataclass(frozen=True)
class TemplateFormat:
    name: str
    user: str
    assistant: str
    system: str
    tool: str
    generation_prompt: str = ""
    """The assistant header (already the tail of a user/tool turn; added after a system/assistant turn)."""
    prefix_bos: bool = False
    """Start the conversation with the tokenizer's BOS token (llama3)."""
    default_system: str = ""
    markers: tuple[str, ...] = ()
    """Special strings the format relies on (checked against the vocabulary)."""


CHATML = TemplateFormat(
    name="chatml",
    user="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
    assistant="{content}<|im_end|>\n",
    system="<|im_start|>system\n{content}<|im_end|>\n",
    tool="<|im_start|>tool\n{content}<|im_end|>\n<|im_start|>assistant\n",
    generation_prompt="<|im_start|>assistant\n",
    markers=("<|im_start|>", "<|im_end|>"),
)

FORMATS: dict[str, TemplateFormat] = {
    "chatml": CHATML,
    "qwen": TemplateFormat(
        name="qwen",
        user=CHATML.user,
        assistant=CHATML.assistant,
        system=CHATML.system,
        tool="<|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        generation_prompt=CHATML.generation_prompt,
        markers=CHATML.markers,
    ),
    "llama3": TemplateFormat(
        name="llama3",
        user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        assistant="{content}<|eot_id|>",
        system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
        tool="<|start_header_id|>ipython<|end_header_id|>\n\n{content}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
        prefix_bos=True,
        markers=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
}

TEMPLATE_NAMES = ("auto", "tokenizer", "simple", *FORMATS)
"""`data.template` values: auto (= null: the tokenizer's own if it has one, else simple), tokenizer, simple
and the named formats."""


def check_template_name(name: str | None) -> None:
    if name is not None and name not in TEMPLATE_NAMES:
        raise ValueError(
            f"Unknown data.template={name!r}; choose one of: null (auto), {', '.join(TEMPLATE_NAMES[1:])}."
        )


def _jinja_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _jinja_slot(fmt: str) -> str:
    """`'<|im_start|>user\\n' + content + '<|im_end|>\\n'` for the format string `...{content}...`."""
    head, _, tail = fmt.partition("{content}")
    parts = ([_jinja_literal(head)] if head else []) + ["content"] + ([_jinja_literal(tail)] if tail else [])
    return " + ".join(parts)


class NamedTemplate:
    """A LLaMA-Factory-style template (see the module docstring)."""

    def __init__(self, tokenizer, fmt: TemplateFormat) -> None:
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.name = fmt.name
        vocab = tokenizer.get_vocab()
        missing = [m for m in fmt.markers if m not in vocab]
        if missing:
            logger.warning(
                f"data.template={fmt.name}: the tokenizer has no single token for {missing}; they are "
                "trained as text pieces (use the model family's own tokenizer for its template)"
            )

    def texts(self, messages: Sequence[dict[str, Any]]) -> list[tuple[str, float]]:
        """The conversation as (text, loss weight) pieces; `\\x00bos` stands for the BOS token."""
        from dataflex.data.processor import message_text

        fmt, out = self.fmt, []
        if fmt.prefix_bos and self.tokenizer.bos_token:
            out.append(("\x00bos", 0.0))
        if (not messages or messages[0]["role"] != "system") and fmt.default_system:
            out.append((fmt.system.format(content=fmt.default_system), 0.0))
        for m in messages:
            role, text = m["role"], message_text(m)
            slot = {"system": fmt.system, "user": fmt.user, "assistant": fmt.assistant, "tool": fmt.tool}.get(
                role
            )
            if slot is None:
                raise ValueError(
                    f"data.template={fmt.name}: unknown message role {role!r} (system, user, assistant, tool)"
                )
            default = 1.0 if role == "assistant" else 0.0
            out.append((slot.replace("{content}", text), float(m.get("loss_weight", default))))
        return out

    def segments(self, messages: Sequence[dict[str, Any]]) -> list[tuple[list[int], float]]:
        tok = self.tokenizer
        return [
            ([tok.bos_token_id] if text == "\x00bos" else tok.encode(text, add_special_tokens=False), w)
            for text, w in self.texts(messages)
        ]

    def jinja(self) -> str:
        """The same format as a HF chat template (for `tokenizer.chat_template`)."""
        fmt = self.fmt
        head = "{{ bos_token }}" if fmt.prefix_bos else ""
        system = (
            "{% if messages and messages[0]['role'] == 'system' %}{% else %}{% set content = "
            + _jinja_literal(fmt.default_system)
            + " %}{{ "
            + _jinja_slot(fmt.system)
            + " }}{% endif %}"
            if fmt.default_system
            else ""
        )
        return (
            head
            + system
            + "{% for message in messages %}{% set content = message['content'] %}"
            + "{% if message['role'] == 'system' %}{{ "
            + _jinja_slot(fmt.system)
            + " }}"
            + "{% elif message['role'] == 'user' %}{{ "
            + _jinja_slot(fmt.user)
            + " }}"
            + "{% elif message['role'] == 'assistant' %}{{ "
            + _jinja_slot(fmt.assistant)
            + " }}"
            + "{% else %}{{ "
            + _jinja_slot(fmt.tool)
            + " }}{% endif %}{% endfor %}"
            + "{% if add_generation_prompt and "
            + "(not messages or messages[-1]['role'] in ['system', 'assistant']) %}"
            + "{{ "
            + _jinja_literal(fmt.generation_prompt)
            + " }}{% endif %}"
        )


def simple_jinja() -> str:
    """DataFlex's `simple` template as a HF chat template: `<|role|>\n{text}\n` per turn, an assistant turn
    `<|assistant|>\n{text}{eos}\n`."""
    return (
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
        "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    )
