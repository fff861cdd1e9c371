"""Turns standard samples (`messages` with per-turn `loss_weight`) into model inputs.

- SFT: the conversation is rendered with a chat template — the tokenizer's own when it has one, else the
  built-in `simple` template — and tokens of turns with ``loss_weight == 0`` (system/user/tool) get label
  -100 unless ``train_on_prompt``. Samples longer than ``cutoff_len`` are truncated from the right.
- Pretrain: every message value is joined into plain text, tokenized with an EOS after each document and
  packed into ``cutoff_len`` blocks *within each domain*, so every block still has one domain.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import torch

from dataflex.data.token_store import StoreSettings, TokenStore

IGNORE_INDEX = -100

SIMPLE_TEMPLATE_TAGS = {
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
    "tool": "<|tool|>",
}


def message_text(message: dict[str, Any]) -> str:
    """The text of one standard message (its `content` is a list of `{type, value}` parts); non-text parts
    (tool calls, tool schemas) are rendered as JSON so they are trained on, not dropped."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(
        p["value"] if isinstance(p["value"], str) else json.dumps(p["value"], ensure_ascii=False)
        for p in content
    )


def check_domain_blocks(short: dict[str, int], cutoff_len: int) -> None:
    """Pretrain: domains whose whole token stream (`short`: name → tokens) is shorter than one block would
    have no rows; name them with their sizes instead of failing later with "no rows"."""
    if short:
        sizes = ", ".join(f"{name}: {n} tokens" for name, n in short.items())
        raise ValueError(
            f"data.mode=pretrain: domain(s) shorter than one block of data.cutoff_len={cutoff_len} "
            f"tokens ({sizes}) would have no rows; lower data.cutoff_len or add text to them."
        )


class SimpleTemplate:
    """Built-in chat template: ``<|role|>\\n{text}\\n`` per turn, assistant turns end with EOS."""

    name = "simple"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def jinja(self) -> str:
        from dataflex.data.templates import simple_jinja

        return simple_jinja()

    def texts(self, messages: Sequence[dict[str, Any]]) -> list[tuple[str, float]]:
        """The conversation as (text, loss_weight) pieces, each tokenized on its own: per turn its tagged
        text; an assistant turn is two pieces, the tag (prompt) and the text + EOS (trained)."""
        eos = self.tokenizer.eos_token or ""
        out = []
        for m in messages:
            tag = SIMPLE_TEMPLATE_TAGS.get(m["role"], f"<|{m['role']}|>")
            if m["role"] == "assistant":
                out.append((f"{tag}\n", 0.0))
                out.append((f"{message_text(m)}{eos}\n", float(m.get("loss_weight", 1.0))))
            else:
                out.append((f"{tag}\n{message_text(m)}\n", float(m.get("loss_weight", 0.0))))
        return out

    def segments(self, messages: Sequence[dict[str, Any]]) -> list[tuple[list[int], float]]:
        """One (token ids, loss_weight) pair per piece of `texts`."""
        return [
            (self.tokenizer.encode(text, add_special_tokens=False), w) for text, w in self.texts(messages)
        ]


class TokenizerTemplate:
    """The tokenizer's own chat template; each turn's tokens are the difference between renders of the
    conversation prefixes (the generation prompt counts as part of the prompt, never of the answer)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.name = "tokenizer"

    def jinja(self) -> str:
        return self.tokenizer.chat_template

    def _render(self, messages: Sequence[dict[str, Any]], generation_prompt: bool) -> list[int]:
        plain = [{"role": m["role"], "content": message_text(m)} for m in messages]
        if not plain:
            return []
        ids = self.tokenizer.apply_chat_template(
            plain, tokenize=True, add_generation_prompt=generation_prompt
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def segments(self, messages: Sequence[dict[str, Any]]) -> list[tuple[list[int], float]]:
        out: list[tuple[list[int], float]] = []
        so_far: list[int] = []
        for i, m in enumerate(messages):
            renders = []
            if m["role"] == "assistant":
                renders.append((self._render(messages[:i], generation_prompt=True), 0.0))
            weight = float(m.get("loss_weight", 1.0 if m["role"] == "assistant" else 0.0))
            renders.append((self._render(messages[: i + 1], generation_prompt=False), weight))
            for ids, w in renders:
                if ids[: len(so_far)] != so_far:
                    raise ValueError(
                        "The tokenizer's chat template is not prefix-stable; set data.template=simple."
                    )
                out.append((ids[len(so_far) :], w))
                so_far = ids
        return out


def build_template(tokenizer, name: str | None):
    from dataflex.data.templates import FORMATS, NamedTemplate, check_template_name

    check_template_name(name)
    if name in FORMATS:
        return NamedTemplate(tokenizer, FORMATS[name])
    if name in (None, "auto"):
        return (
            TokenizerTemplate(tokenizer)
            if getattr(tokenizer, "chat_template", None)
            else SimpleTemplate(tokenizer)
        )
    if name == "simple":
        return SimpleTemplate(tokenizer)
    if name == "tokenizer":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "data.template=tokenizer but the tokenizer has no chat_template; use data.template=simple."
            )
        return TokenizerTemplate(tokenizer)
    raise AssertionError(name)  # (check_template_name refused it)


def record_chat_template(tokenizer, data: TokenizedData) -> None:
    """Sets `tokenizer.chat_template` to the template `data` is rendered with (SFT), so the saved tokenizer
    (final_model/, checkpoints) formats conversations as in training."""
    if data.mode == "sft":
        tokenizer.chat_template = data.processor.template.jinja()


@dataclass
class Features:
    input_ids: list[int]
    labels: list[int]
    domain: int
    sample_id: int


class SFTProcessor:
    """Encodes one standard sample into input ids and labels (prompt masked unless ``train_on_prompt``)."""

    def __init__(
        self, tokenizer, cutoff_len: int, template: str | None = None, train_on_prompt: bool = False
    ):
        self.tokenizer = tokenizer
        self.cutoff_len = cutoff_len
        self.template = build_template(tokenizer, template)
        self.train_on_prompt = train_on_prompt

    @staticmethod
    def _check(sample: dict[str, Any]) -> None:
        if "messages" not in sample:
            keys = sorted(k for k in sample if not k.startswith("_"))
            raise ValueError(
                f"dataset {sample.get('_dataset_name')!r} yields {keys} "
                "(preference pairs?); DataFlex trainers train on `messages`: use an sft converter "
                "(alpaca, sharegpt, openai, text) for this dataset."
            )

    def encode(self, sample: dict[str, Any]) -> tuple[list[int], list[int]]:
        self._check(sample)
        input_ids: list[int] = []
        labels: list[int] = []
        for ids, weight in self.template.segments(sample["messages"]):
            input_ids += ids
            labels += ids if (weight > 0 or self.train_on_prompt) else [IGNORE_INDEX] * len(ids)
        return input_ids[: self.cutoff_len], labels[: self.cutoff_len]

    def encode_many(self, samples: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`encode` of many samples as flat arrays (token ids int32, trained uint8: 1 where the label is the
        token, per-sample lengths int64), with ONE batched tokenizer call for every piece of text of every
        sample (the token store's build; `encode` makes one call per turn). Same ids and labels as `encode`
        (tests/data/test_token_store.py); templates without text pieces (the tokenizer's own chat template,
        which is rendered per conversation prefix) go through `encode` sample by sample."""
        texts_of = getattr(self.template, "texts", None)
        if texts_of is None:
            return _flatten([self.encode(s) for s in samples])
        pieces: list[tuple[str, float]] = []
        per_sample = np.zeros(len(samples), dtype=np.int64)
        for k, sample in enumerate(samples):
            self._check(sample)
            parts = texts_of(sample["messages"])
            per_sample[k] = len(parts)
            pieces += parts
        bos = [self.tokenizer.bos_token_id]
        plain = [text for text, _ in pieces if text != "\x00bos"]  # ("\x00bos": NamedTemplate's BOS)
        encoded = iter(encode_texts(self.tokenizer, plain))
        piece_ids = [bos if text == "\x00bos" else next(encoded) for text, _ in pieces]
        piece_lens = np.fromiter(map(len, piece_ids), np.int64, len(piece_ids))
        flat = np.fromiter(chain.from_iterable(piece_ids), np.int32, int(piece_lens.sum()))
        trained_piece = np.fromiter(
            ((w > 0 or self.train_on_prompt) for _, w in pieces), np.uint8, len(pieces)
        )
        trained = np.repeat(trained_piece, piece_lens)
        piece_sample = np.repeat(np.arange(len(samples)), per_sample)
        totals = np.bincount(piece_sample, weights=piece_lens, minlength=len(samples)).astype(np.int64)
        starts = np.cumsum(totals) - totals
        keep = np.arange(len(flat)) - np.repeat(starts, totals) < self.cutoff_len  # right truncation
        return flat[keep], trained[keep], np.minimum(totals, self.cutoff_len)


def encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """`tokenizer.encode(t, add_special_tokens=False)` of every text in one batched call: the fast backend's
    `encode_batch_fast` (no character offsets, the same ids) when there is one, else the batched HF call."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None)
    if fast is not None:
        return [e.ids for e in fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def _flatten(items: Sequence[tuple[list[int], list[int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(x) for x, _ in items), np.int64, len(items))
    ids = np.fromiter(chain.from_iterable(x for x, _ in items), np.int32, int(lengths.sum()))
    labels = np.fromiter(chain.from_iterable(y for _, y in items), np.int64, int(lengths.sum()))
    return ids, (labels != IGNORE_INDEX).astype(np.uint8), lengths


class TokenizedData:
    """The training view of a DataEngine: item ``i`` is the model-ready features of engine sample ``i``
    (SFT) or of packed block ``i`` (pretrain). Exposes per-item domain ids for the samplers."""

    def __init__(
        self,
        engine,
        tokenizer,
        cutoff_len: int,
        mode: str = "sft",
        template: str | None = None,
        train_on_prompt: bool = False,
        store: StoreSettings | None = None,
    ) -> None:
        self.engine = engine
        self.mode = mode
        self.domain_names: list[str] = list(engine.domain_names)
        self.processor = SFTProcessor(tokenizer, cutoff_len, template, train_on_prompt)
        self._cache: dict[tuple[int, int] | int, tuple[list[int], list[int]]] = {}
        self.store_settings = store
        """How the items are held: None tokenizes in this process (SFT lazily, pretrain up front: small data,
        tests); `StoreSettings` reads them from the memory-mapped token store (`dataflex-run` always does)."""
        self.store: TokenStore | None = None
        if store is not None:
            from dataflex.data.token_store import open_or_build

            self.store = open_or_build(engine, self.processor, mode, store)
            self._blocks = None
            if mode == "pretrain":
                self.domain_ids = np.asarray(self.store.domains, dtype=np.int64)
            else:
                self.domain_ids = np.asarray(engine.domain_ids, dtype=np.int64)
        elif mode == "pretrain":
            self._blocks, self.domain_ids = self._pack(engine, tokenizer, cutoff_len)
        else:
            self._blocks = None
            self.domain_ids = np.asarray(engine.domain_ids, dtype=np.int64)

    @staticmethod
    def _pack(engine, tokenizer, cutoff_len: int) -> tuple[list[list[int]], np.ndarray]:
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        blocks: list[list[int]] = []
        domains: list[int] = []
        short: dict[str, int] = {}
        for d in range(len(engine.domain_names)):
            stream: list[int] = []
            for idx in engine.domain_rows(d):
                text = " ".join(message_text(m) for m in engine[int(idx)]["messages"])
                stream += tokenizer.encode(text, add_special_tokens=False) + eos
            if stream and len(stream) < cutoff_len:  # (a domain without rows in this split is not "short")
                short[engine.domain_names[d]] = len(stream)
            for start in range(0, len(stream) - cutoff_len + 1, cutoff_len):
                blocks.append(stream[start : start + cutoff_len])
                domains.append(d)
        check_domain_blocks(short, cutoff_len)
        return blocks, np.asarray(domains, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.domain_ids)

    def domain_rows(self, d: int) -> np.ndarray:
        return np.flatnonzero(self.domain_ids == d)

    def set_epoch(self, epoch: int) -> None:
        """Datasets with `size`/`weight` serve another window of rows in each epoch (see DataEngine)."""
        if self.mode == "sft" and hasattr(self.engine, "set_epoch"):
            self.engine.set_epoch(epoch)

    def _source_key(self, i: int) -> tuple[int, int] | int:
        """The cache key: the (dataset, row) behind item i, which may change with the epoch."""
        index = getattr(self.engine, "data_index", None)
        return (int(index.dataset_ids[i]), int(index.row_ids[i])) if index is not None else i

    def __getitem__(self, i: int) -> Features:
        i = int(i)
        if self.store is not None:
            if self.mode == "pretrain":
                ids, labels = self.store.item(i)
            else:
                index = self.engine.data_index
                k = int(index.dataset_ids[i])
                ids, labels = self.store.item(int(self.store.dataset_start[k]) + int(index.row_ids[i]))
            return Features(ids, labels, int(self.domain_ids[i]), i)
        if self._blocks is not None:
            ids = self._blocks[i]
            return Features(ids, list(ids), int(self.domain_ids[i]), i)
        key = self._source_key(i)
        if key not in self._cache:
            self._cache[key] = self.processor.encode(self.engine[i])
        ids, labels = self._cache[key]
        return Features(ids, labels, int(self.domain_ids[i]), i)


def collate(features: Sequence[Features], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pads a micro-batch. Labels are already aligned with inputs (the model shifts them)."""
    width = max(len(f.input_ids) for f in features)
    n = len(features)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    for row, f in enumerate(features):
        k = len(f.input_ids)
        input_ids[row, :k] = torch.tensor(f.input_ids)
        labels[row, :k] = torch.tensor(f.labels)
        attention_mask[row, :k] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "domain_ids": torch.tensor([f.domain for f in features], dtype=torch.long),
        "sample_ids": torch.tensor([f.sample_id for f in features], dtype=torch.long),
    }
