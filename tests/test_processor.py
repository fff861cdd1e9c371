"""Chat templating, prompt masking, truncation, packing and collation."""

from __future__ import annotations

import numpy as np
import pytest

from dataflex.data.processor import IGNORE_INDEX, SFTProcessor, TokenizedData, collate
from dataflex.models.tiny import load_tokenizer


def _msg(role, text, weight):
    return {"role": role, "content": [{"type": "text", "value": text}], "loss_weight": weight}


SAMPLE = {
    "messages": [
        _msg("system", "Be brief.", 0.0),
        _msg("user", "Add the two numbers.\n12 + 30", 0.0),
        _msg("assistant", "42", 1.0),
    ]
}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_simple_template_masks_the_prompt(tok):
    ids, labels = SFTProcessor(tok, cutoff_len=512).encode(SAMPLE)
    assert len(ids) == len(labels)
    supervised = [i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    assert tok.decode(supervised).strip() == "42</s>"
    text = tok.decode(ids)
    assert text.startswith("<|system|>") and "<|assistant|>" in text


def test_train_on_prompt_supervises_everything(tok):
    ids, labels = SFTProcessor(tok, cutoff_len=512, train_on_prompt=True).encode(SAMPLE)
    assert labels == ids


def test_multi_turn_supervises_every_assistant_turn(tok):
    sample = {
        "messages": [
            _msg("user", "hi", 0.0),
            _msg("assistant", "one", 1.0),
            _msg("user", "again", 0.0),
            _msg("assistant", "two", 1.0),
        ]
    }
    ids, labels = SFTProcessor(tok, cutoff_len=512).encode(sample)
    supervised = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert "one" in supervised and "two" in supervised and "again" not in supervised


def test_zero_loss_weight_assistant_turn_is_masked(tok):
    sample = {
        "messages": [
            _msg("user", "hi", 0.0),
            _msg("assistant", "skip", 0.0),
            _msg("user", "q", 0.0),
            _msg("assistant", "keep", 1.0),
        ]
    }
    ids, labels = SFTProcessor(tok, cutoff_len=512).encode(sample)
    supervised = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert "keep" in supervised and "skip" not in supervised


def test_cutoff_len_truncates(tok):
    ids, labels = SFTProcessor(tok, cutoff_len=5).encode(SAMPLE)
    assert len(ids) == len(labels) == 5


def test_tokenizers_own_chat_template_is_used(tok):
    tok = load_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    proc = SFTProcessor(tok, cutoff_len=512)
    assert proc.template.name == "tokenizer"
    ids, labels = proc.encode(SAMPLE)
    assert tok.decode(ids).startswith("[system]Be brief.[user]")
    supervised = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert supervised == "42"


def test_unknown_template_is_an_error(tok):
    with pytest.raises(ValueError, match="data.template"):
        SFTProcessor(tok, cutoff_len=8, template="fancy")


class _FakeEngine:
    domain_names = ["a", "b"]

    def __init__(self, texts_by_domain):
        self.samples, ids = [], []
        for d, texts in enumerate(texts_by_domain):
            for t in texts:
                self.samples.append({"messages": [_msg("assistant", t, 1.0)]})
                ids.append(d)
        self.domain_ids = np.array(ids)

    def domain_rows(self, d):
        return np.flatnonzero(self.domain_ids == d)

    def __getitem__(self, i):
        return self.samples[i]


def test_pretrain_packs_blocks_within_each_domain(tok):
    engine = _FakeEngine([["apple river stone"] * 20, ["12 + 34"] * 20])
    data = TokenizedData(engine, tok, cutoff_len=16, mode="pretrain")
    assert len(data) > 2
    assert set(data.domain_ids.tolist()) == {0, 1}
    for i in range(len(data)):
        f = data[i]
        assert len(f.input_ids) == 16 and f.labels == f.input_ids
        text = tok.decode(f.input_ids)
        assert ("apple" in text) != ("1" in text)  # never both domains in one block


def test_collate_pads_right_and_masks(tok):
    engine = _FakeEngine([["short"], ["a much longer text than that"]])
    data = TokenizedData(engine, tok, cutoff_len=64)
    batch = collate([data[0], data[1]], tok.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    short = len(data[0].input_ids)
    assert batch["attention_mask"][0, short:].sum() == 0
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert batch["domain_ids"].tolist() == [0, 1] and batch["sample_ids"].tolist() == [0, 1]


def test_tool_call_parts_are_rendered_not_dropped(tok):
    call = {"name": "add", "arguments": {"a": 1}}
    sample = {
        "messages": [
            _msg("user", "use the tool", 0.0),
            {"role": "assistant", "content": [{"type": "tool_calls", "value": [call]}], "loss_weight": 1.0},
        ]
    }
    ids, labels = SFTProcessor(tok, cutoff_len=512).encode(sample)
    supervised = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert '"name": "add"' in supervised


def test_preference_pairs_are_rejected_with_the_dataset_name(tok):
    with pytest.raises(ValueError, match="'prefs'.*sft converter"):
        SFTProcessor(tok, cutoff_len=64).encode(
            {"chosen_messages": [], "rejected_messages": [], "_dataset_name": "prefs"}
        )


def test_size_limited_dataset_serves_a_new_window_each_epoch(tok, tmp_path):
    import json

    from dataflex.data import DataArguments, DataEngine

    rows = [{"instruction": f"row {i}", "input": "", "output": str(i)} for i in range(20)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "dataset_info.yaml").write_text("d:\n  path: d.jsonl\n  converter: alpaca\n  size: 5\n")
    data = TokenizedData(DataEngine(DataArguments(dataset=str(tmp_path / "dataset_info.yaml"))), tok, 64)
    assert len(data) == 5
    first = {tok.decode(data[i].input_ids) for i in range(5)}
    data.set_epoch(1)
    second = {tok.decode(data[i].input_ids) for i in range(5)}
    assert first.isdisjoint(second)  # without replacement: the next 5 of the 20 rows
