"""Builds everything from a composed config and trains: validate → data → model → trainer.train()."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from dataflex.config.dist import DistConfig
from dataflex.data.processor import TokenizedData, record_chat_template
from dataflex.data.token_store import StoreSettings, check_cache_dir
from dataflex.run_dir import check_output_dir, checkpoint_mismatch
from dataflex.tracking import TrackerGroup
from dataflex.train.best_model import check_metric_available
from dataflex.utils.logging import logger


def validate(cfg: DictConfig) -> None:
    """Cross-field checks that Hydra's typing cannot do; runs before any model or data is loaded.

    Building each group's schema object runs its `__post_init__` checks (e.g. `cutoff_len <= 0`)."""
    from dataflex.config.checks import check_config
    from dataflex.models.hf import check_model_source

    check_config(cfg)
    if "name_or_path" in cfg.model.keys():  # (`in cfg.model` is False for a missing value)
        missing = OmegaConf.is_missing(cfg.model, "name_or_path")
        check_model_source("" if missing else cfg.model.name_or_path)
    for group in ("trainer", "data", "model", "logger", "dist", "launcher"):
        if group in cfg:
            OmegaConf.to_object(cfg[group])
    if cfg.get("component") is not None:
        OmegaConf.to_object(cfg.component)
    check_packing(cfg)
    check_streaming(cfg)
    trainer_check = getattr(get_class(cfg.trainer._target_), "validate_config", None)
    if trainer_check is not None:  # the component contract's checks and the trainer's cross-group ones
        trainer_check(cfg)


def check_packing(cfg: DictConfig) -> None:
    """`data.packing=true` with a component that reads the training forward's hidden states row by row (they
    are laid out as packed rows, not per sample)."""
    component = cfg.get("component")
    if cfg.data.get("packing") and component is not None and component.get("reuse_forward"):
        raise ValueError(
            "data.packing=true cannot be combined with component.reuse_forward=true (it pools the "
            "training forward's hidden states per sample, which packing lays out as packed rows). "
            "Set component.reuse_forward=false (a separate embedding forward) or data.packing=false."
        )


STREAMING_TRAINERS = ("StaticTrainer", "DynamicMixTrainer")
"""Trainers that can train from streams (they need the next sample of a domain, never a sample by id)."""


def check_streaming(cfg: DictConfig) -> None:
    """A streaming source (`data.streaming=true` or `streaming: true` in dataset_info) for a trainer that
    needs random access by id (a selector scores a pool, a weighter's targets): refused by name before any
    load."""
    from dataflex.data.dataset_info import resolve_dataset_arg

    trainer = cfg.trainer._target_.rsplit(".", 1)[-1]
    if cfg.data.get("streaming"):
        what = "data.streaming=true"
    else:
        infos = resolve_dataset_arg(cfg.data.dataset, cfg.data.get("dataset_dir"))
        streamed = [n for n, i in infos.items() if i.streaming]
        if not streamed:
            return
        what = f"dataset(s) {streamed} set `streaming: true` in dataset_info"
    if trainer == "StaticTrainer" and cfg.trainer.get("max_steps", 0) <= 0:
        raise ValueError(f"training from streams ({what}) has no epochs to count: set trainer.max_steps.")
    if trainer in STREAMING_TRAINERS:
        return
    raise ValueError(
        f"{cfg.trainer._target_.rsplit('.', 1)[-1]} needs an index over the training data (it reads "
        f"samples by id) but {what}. Streaming training works with trainer=static and "
        "trainer=dynamic_mix; for this trainer drop streaming and use the token store (the data is "
        "tokenized once into memory-mapped arrays under data.cache_dir, so a large corpus costs "
        "disk, not memory)."
    )


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    validate(cfg)
    store = StoreSettings(
        cache_dir=cfg.data.get("cache_dir"),
        rebuild=bool(cfg.data.get("rebuild_cache")),
        num_proc=cfg.data.get("preprocessing_num_workers"),
    )
    check_cache_dir(store.cache_dir)  # before any output, data or model
    run_dir = Path(cfg.trainer.output_dir or run_dir)
    # Side effects on rank 0 only: the output-dir check, metrics files and trackers (torchrun sets RANK).
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:
        from dataflex.train.checkpoint import resolve_resume

        resume = cfg.trainer.resume_from_checkpoint
        check_output_dir(run_dir, cfg.trainer.overwrite_output_dir, resuming=bool(resume))
        checkpoint = resolve_resume(run_dir, resume)
        differs = checkpoint_mismatch(cfg, checkpoint) if checkpoint is not None else []
        if differs:
            raise ValueError(
                f"trainer.resume_from_checkpoint={resume}: {checkpoint} was written with another "
                f"trainer/component/model config: {'; '.join(differs)}. Resume it with the config "
                "that wrote it."
            )
        if resume == "auto" and checkpoint is None and (run_dir / "metrics.jsonl").exists():
            logger.warning(
                f"trainer.resume_from_checkpoint=auto: no checkpoint in {run_dir}; the run starts again "
                "from step 0 (its partial metrics.jsonl is discarded)."
            )
            (run_dir / "metrics.jsonl").unlink()
        # `_partial_` so the composed config reaches the tracker as it is (uploaded by logger=wandb, with the
        # sweep/job identity read from Hydra) instead of being merged into the logger node and instantiated.
        trackers = instantiate(cfg.logger, _partial_=True)(run_dir=str(run_dir), run_config=cfg)
    else:
        trackers = TrackerGroup([])
    try:
        data_cfg = cfg.data
        train_engine = instantiate(data_cfg)
        data_check = getattr(get_class(cfg.trainer._target_), "check_data", None)
        if data_check is not None:  # e.g. precomputed scores: named key/file/row before the model loads
            data_check(cfg, train_engine)
        eval_engine = instantiate(data_cfg, split="eval") if train_engine.has_eval else None
        check_metric_available(
            cfg.trainer, list(eval_engine.domain_names) if eval_engine is not None else None
        )
        import torch  # (here, not at import time: the CLI's completion and --cfg paths stay light)

        # trainer.seed also fixes what the model build draws from the global RNG (the LoRA adapters of a
        # hub model)
        torch.manual_seed(int(cfg.trainer.seed))
        bundle = instantiate(cfg.model)
        data_kwargs = dict(
            tokenizer=bundle.tokenizer,
            cutoff_len=data_cfg.cutoff_len,
            mode=data_cfg.mode,
            template=data_cfg.template,
            train_on_prompt=data_cfg.train_on_prompt,
            store=store,
        )
        if train_engine.streaming:
            from dataflex.data.stream_training import StreamingTrainData

            train_data = StreamingTrainData(
                train_engine, **{k: v for k, v in data_kwargs.items() if k != "store"}
            )
        else:
            train_data = TokenizedData(train_engine, **data_kwargs)
        eval_data = TokenizedData(eval_engine, **data_kwargs) if eval_engine is not None else None
        record_chat_template(bundle.tokenizer, train_data)  # the saved tokenizer renders as in training
        size = "streamed" if train_engine.streaming else f"{len(train_data)}"
        logger.info(
            f"data: {size} training items over domains {train_data.domain_names}"
            + (f", {len(eval_data)} eval items" if eval_data is not None else ", no eval split")
        )
        # `_partial_`: the component config reaches the trainer as a DictConfig (the trainer builds it with
        # its own context objects) instead of being instantiated recursively by Hydra.
        trainer = instantiate(cfg.trainer, _partial_=True, _convert_="object")(
            bundle=bundle,
            train_data=train_data,
            eval_data=eval_data,
            component=cfg.component,
            trackers=trackers,
            run_dir=str(run_dir),
        )
        trainer.pack_capacity = int(data_cfg.cutoff_len) if data_cfg.get("packing") else None
        trainer.dist_config = DistConfig(**OmegaConf.to_container(cfg.dist)) if "dist" in cfg else None
        return trainer.train()
    finally:
        trackers.finish()
