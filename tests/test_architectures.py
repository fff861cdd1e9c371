"""Any HF causal LM: GPT-2, Qwen2, Phi-3 and Gemma-2 tiny models built from config, saved with a tokenizer and
loaded through `model=hf model.name_or_path=<dir>`, train under full / LoRA / freeze with a dynamic
trainer."""

from __future__ import annotations

import json

import pytest
import torch

from dataflex.models.finetuning import decoder_layers
from dataflex.models.hf import load_hf_model
from dataflex.models.tiny import load_tokenizer

TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


def _config(arch: str, tokenizer):
    import transformers

    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, **ids)
    if arch == "gemma2":
        return transformers.Gemma2Config(head_dim=16, sliding_window=64, **TINY, **ids)
    cls = {"qwen2": transformers.Qwen2Config, "phi3": transformers.Phi3Config}[arch]
    return cls(**TINY, **ids)


ARCHS = ("gpt2", "qwen2", "phi3", "gemma2")
# The decoder-block list each architecture names its own way, and LoRA `all`'s targets (GPT-2: Conv1D).
LAYERS = {"gpt2": "transformer.h", "qwen2": "model.layers", "phi3": "model.layers", "gemma2": "model.layers"}
LORA_TARGETS = {
    "gpt2": {"c_attn", "c_proj", "c_fc"},
    "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "phi3": {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"},
    "gemma2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
}
# One dynamic trainer per architecture (all three fine-tuning types run under it).
TRAINERS = {
    "gpt2": (
        "trainer=dynamic_select",
        "component=less",
        "trainer.target_domain=target",
        "trainer.warmup_step=1",
        "trainer.update_step=1",
        "trainer.update_times=1",
        "component.proj_dim=16",
    ),
    "qwen2": (
        "trainer=dynamic_mix",
        "component=odm",
        "trainer.warmup_step=1",
        "trainer.update_step=1",
        "trainer.update_times=1",
    ),
    "phi3": ("trainer=dynamic_weight", "component=loss", "trainer.warmup_step=1", "trainer.train_step=2"),
    "gemma2": (
        "trainer=dynamic_select",
        "component=loss",
        "trainer.warmup_step=1",
        "trainer.update_step=1",
        "trainer.update_times=1",
    ),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """One saved tiny model + tokenizer folder per architecture."""
    tokenizer = load_tokenizer()
    dirs = {}
    for arch in ARCHS:
        import transformers

        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(_config(arch, tokenizer))
        path = tmp_path_factory.mktemp(arch)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs[arch] = path
    return dirs


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_all_finds_every_projection_but_the_head(model_dirs, arch):
    model = load_hf_model(name_or_path=str(model_dirs[arch]), finetuning_type="lora", lora_rank=2).model
    adapted = {name.split(".")[-1] for name, mod in model.named_modules() if hasattr(mod, "lora_A")}
    assert adapted == LORA_TARGETS[arch]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("n", [1, -1])
def test_freeze_trains_exactly_the_chosen_blocks(model_dirs, arch, n):
    model = load_hf_model(
        name_or_path=str(model_dirs[arch]), finetuning_type="freeze", freeze_trainable_layers=n
    ).model
    prefix, layers = decoder_layers(model)
    assert prefix == LAYERS[arch] and len(layers) == 2
    block = f"{prefix}.{1 if n == 1 else 0}."
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in model.named_parameters() if name.startswith(block)}


def test_freeze_extra_modules_must_match_something(model_dirs):
    with pytest.raises(ValueError, match="model.freeze_extra_modules.*no_such"):
        load_hf_model(
            name_or_path=str(model_dirs["gpt2"]), finetuning_type="freeze", freeze_extra_modules=["no_such"]
        )
    model = load_hf_model(
        name_or_path=str(model_dirs["gpt2"]), finetuning_type="freeze", freeze_extra_modules=["wte"]
    ).model
    assert (
        model.transformer.wte.weight.requires_grad
        and not model.transformer.h[0].attn.c_attn.weight.requires_grad
    )


@pytest.mark.parametrize("finetuning", ["full", "lora", "freeze"])
@pytest.mark.parametrize("arch", ARCHS)
def test_trains_under_a_dynamic_trainer(model_dirs, compose, tmp_path, arch, finetuning):
    from dataflex.run import run

    cfg = compose(
        "model=hf",
        f"model.name_or_path={model_dirs[arch]}",
        f"model.finetuning_type={finetuning}",
        "model.lora_rank=2",
        *TRAINERS[arch],
        "data.max_samples=8",
        "data.cutoff_len=48",
        "trainer.per_device_train_batch_size=4",
        "trainer.eval_steps=0",
        "trainer.eval_on_start=false",
        "trainer.max_eval_samples_per_domain=2",
        "trainer.logging_steps=1",
        "trainer.disable_tqdm=true",
        "logger.plots=false",
    )
    before = {
        n: p.detach().clone()
        for n, p in load_hf_model(name_or_path=str(model_dirs[arch])).model.named_parameters()
    }
    summary = run(cfg, tmp_path / "run")
    assert summary["steps"] == 2
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)
    final = tmp_path / "run" / "final_model"
    if finetuning == "lora":
        from peft import AutoPeftModelForCausalLM

        after = AutoPeftModelForCausalLM.from_pretrained(final).merge_and_unload()
    else:
        from transformers import AutoModelForCausalLM

        after = AutoModelForCausalLM.from_pretrained(final)
    changed = {n for n, p in after.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert changed, "training changed no weight"
    if finetuning == "freeze":  # only the last decoder block trained
        assert all(n.startswith(f"{LAYERS[arch]}.1.") for n in changed), sorted(changed)
