"""Model builders: the embedded tiny LLaMA, local HF models via the Auto classes, fine-tuning types."""

from __future__ import annotations

import pytest
import torch

from dataflex.models.hf import check_model_source, load_hf_model, looks_local
from dataflex.models.tiny import build_tiny_model

from helpers import SMALL_MODEL


def test_default_tiny_model_size_and_tokenizer():
    bundle = build_tiny_model()
    n = sum(p.numel() for p in bundle.model.parameters())
    assert 1_000_000 <= n <= 5_000_000
    assert bundle.model.config.model_type == "llama"
    assert bundle.model.config.vocab_size == len(bundle.tokenizer)
    assert bundle.tokenizer.pad_token_id is not None and bundle.tokenizer.eos_token_id is not None


def test_tiny_init_is_seeded():
    a, b = build_tiny_model(**SMALL_MODEL, seed=3), build_tiny_model(**SMALL_MODEL, seed=3)
    c = build_tiny_model(**SMALL_MODEL, seed=4)
    wa, wb, wc = (m.model.lm_head.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_lora_adapters_are_seeded_too():
    """The adapters' random init comes from the model seed, not from whatever the global RNG holds."""
    first = build_tiny_model(finetuning_type="lora", **SMALL_MODEL).model
    torch.manual_seed(1234)
    second = build_tiny_model(finetuning_type="lora", **SMALL_MODEL).model
    adapters = [(n, p) for n, p in first.named_parameters() if "lora_A" in n]
    assert adapters and any(p.abs().sum() > 0 for _, p in adapters)
    other = dict(second.named_parameters())
    assert all(torch.equal(p, other[n]) for n, p in adapters)
    reseeded = build_tiny_model(finetuning_type="lora", seed=1, **SMALL_MODEL).model
    assert not torch.equal(adapters[0][1], dict(reseeded.named_parameters())[adapters[0][0]])


def test_hf_loads_a_local_model_folder(tmp_path):
    tiny = build_tiny_model(**SMALL_MODEL)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    bundle = load_hf_model(name_or_path=str(tmp_path))
    torch.testing.assert_close(bundle.model.lm_head.weight, tiny.model.lm_head.weight)
    assert bundle.base_model_path == str(tmp_path)
    lora = load_hf_model(name_or_path=str(tmp_path), finetuning_type="lora", lora_rank=2)
    trainable = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_all_targets_every_linear_but_the_head():
    model = build_tiny_model(**SMALL_MODEL, finetuning_type="lora", lora_rank=2).model
    adapted = {name.split(".")[-1] for name, mod in model.named_modules() if hasattr(mod, "lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize("target", [["all", "q_proj"], []])
def test_lora_target_all_alone_or_names(target):
    with pytest.raises(ValueError, match="model.lora_target"):
        build_tiny_model(**SMALL_MODEL, finetuning_type="lora", lora_target=target)


def test_unknown_finetuning_type():
    with pytest.raises(ValueError, match="model.finetuning_type"):
        build_tiny_model(**SMALL_MODEL, finetuning_type="half")


@pytest.mark.parametrize(
    "name,local",
    [
        ("org/model", False),
        ("gpt2", False),
        ("/abs/dir", True),
        ("./rel", True),
        ("a/b/c", True),
        ("~/m", True),
    ],
)
def test_local_path_or_hub_id(name, local):
    assert looks_local(name) is local


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        check_model_source(str(tmp_path))


def test_unreachable_hub_id_names_the_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="model.name_or_path=dataflex-test/does-not-exist"):
        load_hf_model(name_or_path="dataflex-test/does-not-exist")
