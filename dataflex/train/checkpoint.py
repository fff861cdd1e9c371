"""Checkpoints that resume exactly: model (HF format), optimizer, scheduler, every rank's RNG states, the
trainer's state (sampler position, component state), written atomically.

Layout of `checkpoint-<step>/`: the model as `save_pretrained` writes it (a peft adapter for LoRA), the
tokenizer, `training_state.pt` (optimizer, scheduler, step, trainer state), `rng_state_<rank>.pt`, and
`trainer_state.json`. Under DeepSpeed the optimizer is not in `training_state.pt`: every rank's model and
optimizer shards are in `deepspeed/`, written and read by the engine (the HF-format model is still written,
gathered under ZeRO-3, so plain transformers can load a checkpoint). Everything is written into
`checkpoint-<step>.tmp/` first and renamed when complete, so a kill during a save leaves the previous
checkpoint intact; `.tmp` folders are never resumed from. Our files load with `torch.load(weights_only=True)`
(numpy arrays are stored as tagged tensors, not pickles); DeepSpeed loads its shard files as pickles.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataflex.train.saving import save_model

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_ND = "__ndarray__"
DEEPSPEED_TAG = "deepspeed"
"""Folder (DeepSpeed's checkpoint tag) inside `checkpoint-<step>/` for the engine's model/optimizer shards."""


def to_safe(obj: Any) -> Any:
    """numpy arrays/scalars → tagged tensors/Python numbers, recursively (loadable with weights_only)."""
    if isinstance(obj, np.ndarray):
        stored = obj.astype(np.int64) if obj.dtype.kind == "u" else obj  # torch has no general uint32/64
        return {_ND: torch.from_numpy(np.ascontiguousarray(stored)), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_safe(v) for v in obj)
    return obj


def from_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        if _ND in obj:
            return obj[_ND].numpy().astype(obj["dtype"], copy=False)
        return {k: from_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_safe(v) for v in obj)
    return obj


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return to_safe(state)


def set_rng_state(state: dict[str, Any]) -> None:
    state = from_safe(state)
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = [
        (int(m.group(1)), p)
        for p in Path(run_dir).glob("checkpoint-*")
        if (m := CHECKPOINT_RE.match(p.name)) and (p / "training_state.pt").is_file()
    ]
    return max(found)[1] if found else None


def resolve_resume(run_dir: Path, value: str | None) -> Path | None:
    """`auto` → the newest complete checkpoint in run_dir (None if none); a path → that checkpoint."""
    if not value:
        return None
    if value == "auto":
        return latest_checkpoint(run_dir)
    path = Path(value).expanduser()
    if not (path / "training_state.pt").is_file():
        raise FileNotFoundError(
            f"trainer.resume_from_checkpoint={value}: {path} is not a complete DataFlex "
            "checkpoint (no training_state.pt); use `auto` or a checkpoint-<step> folder."
        )
    return path


def deepspeed_engine(loop) -> Any:
    """The DeepSpeed engine when accelerate runs DeepSpeed (`loop.model` is then a `DeepSpeedEngine` whose
    weights and optimizer state may be shards), else None."""
    return loop.model if loop.accelerator.distributed_type.name == "DEEPSPEED" else None


def _hf_state_dict(loop, engine) -> tuple[bool, dict | None]:
    """(write the HF model?, the weights to write). Collective under ZeRO-3, where the live model holds only
    shards: every rank gathers. Skipped when ZeRO-3 is told not to gather 16-bit weights (the engine's shards
    still resume the run)."""
    if engine is None or loop.zero_stage != 3:
        return True, None
    if not engine.zero_gather_16bit_weights_on_model_save():
        return False, None
    return True, loop.accelerator.get_state_dict(loop.model)


def save_checkpoint(loop, path: Path, step: int) -> None:
    """Collective: every rank calls it. Rank 0 writes the shared parts, each rank its RNG state; under
    DeepSpeed every rank also writes its model/optimizer shards through the engine (into `deepspeed/`)."""
    acc = loop.accelerator
    tmp = path.with_name(path.name + ".tmp")
    engine = deepspeed_engine(loop)
    if loop.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    write_model, weights = _hf_state_dict(loop, engine)
    if engine is not None:
        engine.save_checkpoint(str(tmp), tag=DEEPSPEED_TAG)
    if loop.is_main:
        if write_model:
            save_model(
                loop.trainer.bundle, acc.unwrap_model(loop.model), tmp, state_dict=weights, final_path=path
            )
        optimizer = None if engine is not None else loop.optimizer.state_dict()  # the engine saved its shards
        torch.save(
            {
                "step": step,
                "optimizer": optimizer,
                "scheduler": loop.scheduler.state_dict(),
                "trainer": to_safe(loop.trainer.state_dict()),
                "log_interval": loop.log_interval,
                "best_model": loop.best.state_dict(),
            },
            tmp / "training_state.pt",
        )
        (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step}, indent=2))
    acc.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng_state_{loop.rank}.pt")
    data_state = loop.trainer.rank_state_dict() if hasattr(loop.trainer, "rank_state_dict") else None
    if data_state is not None:  # per-rank data positions (stream readers)
        (tmp / f"data_state_{loop.rank}.json").write_text(json.dumps(data_state))
    acc.wait_for_everyone()
    if loop.is_main:
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _prune(path.parent, loop.args.save_total_limit, protect=loop.best.best_step)
    acc.wait_for_everyone()


def _prune(run_dir: Path, keep: int | None, protect: int | None = None) -> None:
    """Keeps the newest `keep` checkpoints, and the best one (`protect`: its step) as HF Trainer does."""
    if not keep:
        return
    found = sorted(
        (int(m.group(1)), p) for p in run_dir.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name))
    )
    for step, p in found[:-keep]:
        if step != protect:
            shutil.rmtree(p)


def load_model_weights(model, path: Path) -> None:
    """Loads the weights `save_model` wrote back into the live (unwrapped) model."""
    from safetensors.torch import load_file

    if (path / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
        return
    index = path / "model.safetensors.index.json"
    if index.is_file():  # `save_pretrained` sharded a large model: its shards hold disjoint keys
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(path / shard))
    else:
        state = load_file(path / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k or "embed" in k}
    if unexpected or set(missing) - tied:
        raise RuntimeError(
            f"{path}: checkpoint does not match the model (missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})."
        )


def _load_weights_and_optimizer(loop, path: Path, optimizer_state: dict | None) -> None:
    """Under DeepSpeed the engine restores its own shards (every rank, collectively); our LR scheduler is not
    the engine's, so its state comes from training_state.pt."""
    engine = deepspeed_engine(loop)
    if (engine is not None) != (optimizer_state is None):
        raise RuntimeError(
            f"{path} was written {'without' if engine is not None else 'with'} DeepSpeed; resume "
            "with the same dist= setting that wrote it."
        )
    if engine is None:
        load_model_weights(loop.accelerator.unwrap_model(loop.model), path)
        loop.optimizer.load_state_dict(optimizer_state)
        return
    loaded, _ = engine.load_checkpoint(
        str(path), tag=DEEPSPEED_TAG, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if loaded is None:
        raise FileNotFoundError(f"{path / DEEPSPEED_TAG}: DeepSpeed found no checkpoint to load.")


def load_checkpoint(loop, path: Path) -> int:
    """Restores model, optimizer, scheduler, trainer state and this rank's RNG; returns the step."""
    state = torch.load(path / "training_state.pt", weights_only=True, map_location="cpu")
    try:
        _load_weights_and_optimizer(loop, path, state["optimizer"])
    except RuntimeError as err:
        if "size mismatch" not in str(err) and "does not match the model" not in str(err):
            raise
        raise RuntimeError(
            f"{path} holds a model of another size or architecture than model.* of this run; "
            f"resume it with the model config that wrote it. ({str(err).splitlines()[0]})"
        ) from None
    loop.scheduler.load_state_dict(state["scheduler"])
    try:
        loop.trainer.load_state_dict(from_safe(state["trainer"]))
    except (KeyError, TypeError, ValueError) as err:
        raise RuntimeError(
            f"{path} was written by another trainer or component (its state has no {err}); resume "
            f"it with the trainer= and component= that wrote it."
        ) from None
    loop.log_interval = dict(state["log_interval"])
    if state.get("best_model") is not None:
        loop.best.load_state_dict(state["best_model"])
    rng_file = path / f"rng_state_{loop.rank}.pt"
    if not rng_file.is_file():
        raise FileNotFoundError(
            f"{rng_file} is missing: resume with the same number of processes that wrote the checkpoint."
        )
    set_rng_state(torch.load(rng_file, weights_only=True))
    data_file = path / f"data_state_{loop.rank}.json"
    if data_file.is_file():
        loop.trainer.load_rank_state_dict(json.loads(data_file.read_text()))
    return int(state["step"])
