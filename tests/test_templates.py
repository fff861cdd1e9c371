"""Named chat templates (data.template=chatml|qwen|llama3|simple|tokenizer) in LLaMA-Factory's formats, and
the saved tokenizer carrying the template the model was trained with."""

from __future__ import annotations

import logging

import pytest

from dataflex.data import DataArguments
from dataflex.data.processor import IGNORE_INDEX, SFTProcessor, build_template
from dataflex.models.tiny import load_tokenizer


def _msg(role, text):
    return {
        "role": role,
        "content": [{"type": "text", "value": text}],
        "loss_weight": 1.0 if role == "assistant" else 0.0,
    }


CONVO = [
    _msg("system", "Be brief."),
    _msg("user", "2+2?"),
    _msg("assistant", "4"),
    _msg("user", "3+3?"),
    _msg("assistant", "6"),
]
EXPECTED = {  # LLaMA-Factory's rendering of CONVO for each name (bos of the tiny tokenizer: <s>)
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
    "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n6<|im_end|>\n",
    "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
    "<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n3+3?<|eot_id|><|start_header_id|>assistant"
    "<|end_header_id|>\n\n6<|eot_id|>",
    "simple": "<|system|>\nBe brief.\n<|user|>\n2+2?\n<|assistant|>\n4</s>\n"
    "<|user|>\n3+3?\n<|assistant|>\n6</s>\n",
}
EXPECTED["qwen"] = EXPECTED["chatml"]


def _plain(messages):
    return [{"role": m["role"], "content": m["content"][0]["value"]} for m in messages]


@pytest.mark.parametrize("name", ["chatml", "qwen", "llama3", "simple"])
def test_training_text_and_saved_jinja_match_llama_factory(name):
    tok = load_tokenizer()
    template = build_template(tok, name)
    ids = [i for seg, _ in template.segments(CONVO) for i in seg]
    assert tok.decode(ids, skip_special_tokens=False) == EXPECTED[name]
    tok.chat_template = template.jinja()
    assert tok.apply_chat_template(_plain(CONVO), tokenize=False) == EXPECTED[name]


def test_qwen_adds_its_default_system_and_the_generation_prompt():
    tok = load_tokenizer()
    template = build_template(tok, "qwen")
    tok.chat_template = template.jinja()
    text = tok.apply_chat_template(_plain(CONVO[1:3]), tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>assistant\n"
    )
    texts = [t for t, _ in template.texts(CONVO[1:3])]
    assert texts[0].startswith("<|im_start|>system\nYou are Qwen")


@pytest.mark.parametrize(
    "name,trained", [("chatml", "4<|im_end|>\n|6<|im_end|>\n"), ("llama3", "4<|eot_id|>|6<|eot_id|>")]
)
def test_only_the_answers_and_their_end_markers_are_trained(name, trained):
    """With the markers in the vocabulary (as in Qwen/Llama-3 tokenizers) each is one token."""
    tok = load_tokenizer()
    markers = ["<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok.add_special_tokens({"additional_special_tokens": markers})
    ids, labels = SFTProcessor(tok, cutoff_len=512, template=name).encode({"messages": CONVO})
    spans, current = [], []
    for i, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            current.append(i)
        elif current:
            spans.append(current)
            current = []
    spans += [current] if current else []
    assert "|".join(tok.decode(s) for s in spans) == trained
    end = "<|im_end|>" if name == "chatml" else "<|eot_id|>"
    assert ids.count(tok.convert_tokens_to_ids(end)) == 5  # one per turn


def test_missing_markers_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="dataflex"):
        build_template(load_tokenizer(), "chatml")
    assert any("<|im_end|>" in m and "text pieces" in m for m in caplog.messages)


def test_unknown_template_is_refused_before_loading():
    with pytest.raises(ValueError, match="data.template='vicuna'.*chatml, qwen, llama3"):
        DataArguments(template="vicuna")


@pytest.mark.parametrize("template", ["chatml", None])
def test_saved_tokenizer_carries_the_training_template(compose, tmp_path, template):
    """final_model/ and checkpoints: loading the tokenizer back renders the training text; a model trained
    with the default (simple) template and loaded again encodes the same ids through the tokenizer's own."""
    from transformers import AutoTokenizer

    from dataflex.run import run

    cfg = compose(
        *(["data.template=" + template] if template else []),
        "trainer.max_steps=2",
        "trainer.save_steps=1",
        "trainer.eval_steps=0",
        "trainer.eval_on_start=false",
        "data.max_samples=8",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_hidden_layers=1",
        "model.num_attention_heads=2",
        "model.num_key_value_heads=2",
        "trainer.disable_tqdm=true",
        "logger.plots=false",
    )
    run(cfg, tmp_path)
    expected = EXPECTED[template or "simple"]
    for folder in ("final_model", "checkpoint-1"):
        tok = AutoTokenizer.from_pretrained(tmp_path / folder)
        assert tok.apply_chat_template(_plain(CONVO), tokenize=False) == expected
    if template is None:
        saved = AutoTokenizer.from_pretrained(tmp_path / "final_model")
        sample = {"messages": CONVO}
        assert SFTProcessor(saved, 512, template=None).encode(sample) == SFTProcessor(
            load_tokenizer(), 512, template="simple"
        ).encode(sample)
