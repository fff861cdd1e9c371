"""Checks every composed config gets before anything loads, whatever schema a node has.

- Unknown keys: `+trainer.no_such_option=1` passes Hydra's compose (`+` adds a key to a typed node) and
  would only fail when the object is built; here it fails naming the key and the nearest valid names.
- Non-finite floats: `nan`/`inf` in any float key (a NaN `max_grad_norm` silently disables clipping, a NaN
  learning rate trains NaNs); seeds must be in numpy's range [0, 2**32).
- A local model folder without tokenizer files; `data.cutoff_len` above the model's maximum positions.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

GROUPS = ("trainer", "data", "model", "logger", "dist", "launcher")
SEED_RANGE = (0, 2**32)


def suggest(key: str, valid: list[str]) -> str:
    """`did you mean ...?` with the closest names, else the three nearest ones (difflib's ratio)."""
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    if close:
        return f"did you mean {' or '.join(close)}?"
    nearest = difflib.get_close_matches(key, valid, n=3, cutoff=0.0)
    return f"nearest valid keys: {', '.join(nearest)} (all of them: dataflex-run --cfg job)."


def _schema_fields(node: DictConfig) -> set[str] | None:
    schema = OmegaConf.get_type(node)
    if schema is None or not dataclasses.is_dataclass(schema):
        return None
    return {f.name for f in dataclasses.fields(schema)}


def _target_params(node: DictConfig) -> set[str] | None:
    """Parameters the node's `_target_` accepts; None when it takes **kwargs or cannot be inspected."""
    target = node.get("_target_") if "_target_" in node else None
    if not isinstance(target, str):
        return None
    try:
        from hydra.utils import get_object

        params = inspect.signature(get_object(target)).parameters.values()
    except Exception:  # noqa: BLE001 - an unimportable target is reported where it is built
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def check_known_keys(cfg: DictConfig) -> None:
    """Every key of a typed group node must be a field of its schema (the component: a schema field or a
    constructor argument of its `_target_`)."""
    for group in (*GROUPS, "component"):
        node = cfg.get(group) if group in cfg else None
        if not isinstance(node, DictConfig):
            continue
        fields = _schema_fields(node)
        if fields is None:
            continue
        if group == "component":
            params = _target_params(node)
            if params is None:
                continue
            fields |= params
        unknown = [k for k in node.keys() if k not in fields and not str(k).startswith("_")]
        if unknown:
            key = str(unknown[0])
            valid = sorted(f for f in fields if not f.startswith("_"))
            raise ValueError(
                f"{group}.{key} is not an option of {group} ({type_name(node)}); {suggest(key, valid)}"
            )


def type_name(node: DictConfig) -> str:
    schema = OmegaConf.get_type(node)
    return schema.__name__ if schema is not None else "untyped"


def _leaves(node: Any, prefix: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{prefix}[{i}]")
    else:
        yield prefix, node


def check_values(cfg: DictConfig) -> None:
    """Refuses non-finite floats in any key and seeds outside numpy's range, naming the key."""
    container = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    for key, value in _leaves(container):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key}={value} is not a finite number; give a finite value.")
        name = key.rsplit(".", 1)[-1]
        if (
            (name == "seed" or name.endswith("_seed"))
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            if not SEED_RANGE[0] <= value < SEED_RANGE[1]:
                raise ValueError(f"{key}={value} is out of range; a seed must be in [0, 2**32).")


def check_config(cfg: DictConfig) -> None:
    check_known_keys(cfg)
    check_values(cfg)
    if "model" in cfg and isinstance(cfg.model, DictConfig):
        check_tokenizer_files(cfg.model)
    check_cutoff_len(cfg)


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "merges.txt",
)
ABSOLUTE_POSITION_KEYS = ("n_positions", "n_ctx")
"""config.json keys of learned absolute position tables (GPT-2 family): longer inputs index past them."""
POSITION_KEYS = ("max_position_embeddings", "max_sequence_length", "seq_length", *ABSOLUTE_POSITION_KEYS)


def _local_model_dir(model: DictConfig, key: str) -> Path | None:
    from dataflex.models.hf import looks_local

    value = model.get(key) if key in model else None
    if not value or OmegaConf.is_missing(model, key) or not looks_local(str(value)):
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_dir() else None


def check_tokenizer_files(model: DictConfig) -> None:
    """A local model folder without any tokenizer file fails later with a sentencepiece/tiktoken message
    that misses the cause; say it here."""
    key = "tokenizer_path" if model.get("tokenizer_path") else "name_or_path"
    folder = _local_model_dir(model, key)
    if folder is None or (folder / "adapter_config.json").is_file():
        return
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"model.{key}={model.get(key)}: {folder} has no tokenizer files (none of "
            f"{', '.join(TOKENIZER_FILES[:4])}, ...). Save the tokenizer there "
            "(tokenizer.save_pretrained(folder)) or point model.tokenizer_path at one."
        )


def model_max_positions(model: DictConfig) -> tuple[int | None, str, bool]:
    """(maximum positions, where that number comes from, whether they are learned absolute positions)."""
    if "max_position_embeddings" in model and isinstance(model.get("max_position_embeddings"), int):
        return int(model.max_position_embeddings), "model.max_position_embeddings", False
    folder = _local_model_dir(model, "name_or_path")
    if folder is None or not (folder / "config.json").is_file():
        return None, "", False
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None, "", False
    for key in POSITION_KEYS:
        if isinstance(config.get(key), int):
            return config[key], f"{key} in {folder / 'config.json'}", key in ABSOLUTE_POSITION_KEYS
    return None, "", False


def check_cutoff_len(cfg: DictConfig) -> None:
    """data.cutoff_len above the model's positions: refused for learned absolute positions (they would index
    past the table), a warning for rotary models (they run, but beyond the length they were trained on)."""
    if "data" not in cfg or "model" not in cfg or cfg.data.get("cutoff_len") is None:
        return
    limit, source, absolute = model_max_positions(cfg.model)
    cutoff = int(cfg.data.cutoff_len)
    if limit is None or cutoff <= limit:
        return
    message = f"data.cutoff_len={cutoff} is above the model's maximum of {limit} positions ({source})"
    if absolute:
        raise ValueError(f"{message}; lower data.cutoff_len to at most {limit}.")
    from dataflex.utils.logging import logger

    logger.warning(f"{message}: samples longer than {limit} tokens go beyond what the model was trained on.")
