"""Any HF causal LM + tokenizer by the Auto classes, from a local folder or a hub id."""

from __future__ import annotations

from pathlib import Path

import torch

from dataflex.models.bundle import ModelBundle
from dataflex.models.finetuning import apply_finetuning

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def looks_local(name_or_path: str) -> bool:
    """A path (absolute, ./, ../, ~, or more than one `/`) rather than an `org/name` hub id."""
    p = str(name_or_path)
    return p.startswith(("/", ".", "~")) or p.count("/") > 1 or Path(p).exists()


def check_model_source(name_or_path: str, key: str = "model.name_or_path") -> None:
    """Fails fast (before anything is loaded) when a local model folder is missing or incomplete."""
    if not name_or_path or str(name_or_path) == "???":
        raise ValueError(f"{key} is not set: pass {key}=/path/to/hf_model (a local folder or a hub id).")
    if looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{key}={name_or_path}: no such model folder ({path.resolve()}).")
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"{key}={name_or_path}: {path} has no config.json; is it a HF model folder?"
            )


def load_hf_model(
    *,
    name_or_path: str,
    tokenizer_path: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    finetuning_type: str = "full",
    **finetuning,
) -> ModelBundle:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_source(name_or_path)
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r} is unknown; choose one of {list(DTYPES)}.")
    source = str(Path(name_or_path).expanduser()) if looks_local(name_or_path) else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_path or source, revision=revision, trust_remote_code=trust_remote_code
        )
        kwargs = {"revision": revision, "trust_remote_code": trust_remote_code, "dtype": DTYPES[dtype]}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as err:
        if not looks_local(name_or_path):
            raise OSError(
                f"model.name_or_path={name_or_path}: could not load it from the hub (offline? not a "
                f"repo id?). Download it and pass the local folder instead. Cause: {err}"
            ) from err
        raise
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = apply_finetuning(model, finetuning_type, **finetuning)
    return ModelBundle(
        model=model, tokenizer=tokenizer, finetuning_type=finetuning_type, base_model_path=source
    )
