"""Training arguments (HF `TrainingArguments` names where they exist) and the trainer config schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "sgd", "adafactor")
"""`trainer.optim` names (HF's); any other optimizer by its class path, e.g. `torch.optim.RMSprop`."""
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "warmup_stable_decay",
)
LOSS_IMPLS = ("auto", "plain", "chunked", "liger")


@dataclass
class TrainingArguments:
    output_dir: str | None = None
    """Where checkpoints, metrics and the final model go. None: the Hydra run dir of this job."""
    overwrite_output_dir: bool = False
    """Allow writing into an output_dir that already holds a run's metrics or checkpoints."""
    seed: int = 42
    """Seed for model init, data order and components."""
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler_type: str = "cosine"
    """Any `transformers.get_scheduler` name: linear, cosine, constant, constant_with_warmup, ..."""
    warmup_ratio: float = 0.0
    """Fraction of the total optimizer steps used for linear LR warmup."""
    warmup_steps: int = 0
    """Linear LR warmup over this many optimizer steps (HF's `warmup_steps`; set it or `warmup_ratio`, not
    both). Not the dynamic trainers' `warmup_step`, which is the phase before the first
    selection/mixing/weighting."""
    optim: str = "adamw_torch"
    """adamw_torch | adamw_torch_fused | sgd | adafactor (HF's names: Adafactor with a fixed
    `learning_rate`, no relative step) or any optimizer by its class path (`_target_`), e.g.
    `torch.optim.RMSprop`; it is built as `cls(param_groups, lr=learning_rate, **optim_args)` with weight
    decay set per group (none on biases/norms)."""
    optim_args: dict[str, Any] = field(default_factory=dict)
    """Extra optimizer keyword arguments, checked against the optimizer's signature:
    `+trainer.optim_args.momentum=0.9` (Hydra adds keys to a dict with `+`) or
    `'++trainer.optim_args={momentum:0.9,nesterov:true}'`. The Adam betas and epsilon come from
    `adam_beta1/adam_beta2/adam_epsilon` for the AdamW options."""
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int | None = None
    """Row cap of an evaluation/scoring batch. None: batches are sized by `scoring_max_tokens` alone."""
    scoring_max_tokens: int | None = None
    """Padded tokens per forward-only batch (evaluation, loss/delta-loss scoring, reference models); rows are
    bucketed by length first. None: sized from the free memory (at most 16384)."""
    loss_impl: str = "auto"
    """How per-sample losses are computed: `plain` (full B x T x V float32 logits), `chunked` (final hidden
    states through the LM head in chunks of `loss_chunk_size` supervised tokens, recomputed in backward),
    `liger` (CUDA + liger-kernel's fused linear cross entropy, after a check that per-token weights reach the
    gradient) or `auto` (chunked where the model allows, else plain; the log says which and why)."""
    loss_chunk_size: int | None = None
    """Tokens per chunk of the chunked loss (peak extra memory ~ 3 x chunk x vocab floats). None: sized so
    one chunk holds ~32M logits (256 tokens at a 128k vocabulary, 1024 at 32k)."""
    gradient_checkpointing: bool = False
    """Recompute decoder-layer activations in backward (HF's, use_reentrant=False; with LoRA the input
    embeddings are made to require grad). Per-sample gradient features run in eval mode, which HF does
    not checkpoint, so they are unaffected."""
    gradient_accumulation_steps: int = 1
    max_steps: int = 300
    """Total optimizer steps; <= 0 means derive them from num_train_epochs."""
    num_train_epochs: float = 1.0
    """Used only when max_steps <= 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    logging_steps: int = 10
    eval_steps: int = 100
    """Evaluate every this many steps (and at step 0 and at the end); 0 disables periodic eval."""
    eval_on_start: bool = True
    max_eval_samples_per_domain: int | None = None
    """Cap the eval rows of each domain (None: all)."""
    save_steps: int = 0
    """Write a checkpoint every this many steps; 0: only the final model."""
    save_total_limit: int | None = None
    """Keep only the newest N checkpoints (None: all)."""
    resume_from_checkpoint: str | None = None
    """`auto` (the newest complete checkpoint in output_dir, or a fresh start if there is none) or a
    checkpoint folder. Resuming continues model, optimizer, scheduler, RNG, data position and component
    state."""
    save_final_model: bool = True
    load_best_model_at_end: bool = False
    """Save as `final_model` the checkpoint whose `metric_for_best_model` was best (HF semantics: only
    evaluated checkpoints compete, plus the last step; needs `eval_steps > 0` and `save_steps` a multiple of
    `eval_steps`). The best checkpoint is never pruned by `save_total_limit`."""
    metric_for_best_model: str = "eval/loss"
    """Any logged eval metric: `eval/loss` (token-weighted over all domains), `eval/loss/<domain>`,
    `eval/ppl`, `eval/ppl/<domain>`; `loss`, `eval_loss` (HF's names) or `loss/<domain>` mean the same."""
    greater_is_better: bool | None = None
    """None: False for losses and perplexities (names with `loss` or `ppl`), else True."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations in a row without `metric_for_best_model` improving by more than
    `early_stopping_threshold` (HF's EarlyStoppingCallback); None: never stop early."""
    early_stopping_threshold: float = 0.0
    bf16: bool = False
    fp16: bool = False
    loss_reduction: str = "token"
    """How the plain loss averages over the global batch: `token` (mean over all supervised tokens, as HF
    Trainer) or `sample` (mean of each sample's token-mean loss, the unit dynamic components work on)."""
    nan_policy: str = "stop"
    """On a NaN/inf loss: `stop` (error naming the step and sample ids) or `skip_step` (drop that update)."""
    disable_tqdm: bool = False
    dataloader_num_workers: int = 0
    """DataLoader worker processes that collate the next step's micro-batches while this one trains (HF's
    name). 0: collate on the training thread (exactly the ids either way: only already decided steps are
    prefetched; a step after a selection/mixing update or a checkpoint is drawn when it is due)."""
    dataloader_pin_memory: bool = True
    """Pin the collated batches in page-locked memory (CUDA only; ignored on a CPU) when workers collate."""

    def __post_init__(self) -> None:
        _check_positive("trainer.per_device_train_batch_size", self.per_device_train_batch_size)
        for key in ("per_device_eval_batch_size", "scoring_max_tokens"):
            if getattr(self, key) is not None:
                _check_positive(f"trainer.{key}", getattr(self, key))
        if self.loss_chunk_size is not None:
            _check_positive("trainer.loss_chunk_size", self.loss_chunk_size)
        if self.loss_impl not in LOSS_IMPLS:
            raise ValueError(f"trainer.loss_impl={self.loss_impl!r} is unknown; choose one of {LOSS_IMPLS}.")
        _check_positive("trainer.gradient_accumulation_steps", self.gradient_accumulation_steps)
        if self.dataloader_num_workers < 0:
            raise ValueError(
                f"trainer.dataloader_num_workers must be >= 0, got {self.dataloader_num_workers}."
            )
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("Set trainer.max_steps > 0 or trainer.num_train_epochs > 0 (both are <= 0).")
        if self.learning_rate < 0:
            raise ValueError(f"trainer.learning_rate must be >= 0, got {self.learning_rate}.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"trainer.warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.warmup_steps < 0:
            raise ValueError(f"trainer.warmup_steps must be >= 0, got {self.warmup_steps}.")
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError(
                f"Set trainer.warmup_steps ({self.warmup_steps}) or trainer.warmup_ratio "
                f"({self.warmup_ratio}), not both."
            )
        check_optim(self.optim, self.optim_args)
        self._check_best_model()
        for key in ("logging_steps", "eval_steps", "save_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"trainer.{key} must be >= 0, got {getattr(self, key)}.")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(
                f"trainer.lr_scheduler_type={self.lr_scheduler_type!r} is unknown; "
                f"choose one of {SCHEDULERS}."
            )
        if self.bf16 and self.fp16:
            raise ValueError("Set at most one of trainer.bf16 and trainer.fp16.")
        if self.nan_policy not in ("stop", "skip_step"):
            raise ValueError(f"trainer.nan_policy must be 'stop' or 'skip_step', got {self.nan_policy!r}.")
        if self.save_total_limit is not None and self.save_total_limit <= 0:
            raise ValueError(f"trainer.save_total_limit must be > 0 or null, got {self.save_total_limit}.")
        if self.loss_reduction not in ("token", "sample"):
            raise ValueError(
                f"trainer.loss_reduction must be 'token' or 'sample', got {self.loss_reduction!r}."
            )

    def _check_best_model(self) -> None:
        if self.early_stopping_patience is not None and self.early_stopping_patience <= 0:
            raise ValueError(
                f"trainer.early_stopping_patience must be > 0 or null, got {self.early_stopping_patience}."
            )
        if self.early_stopping_threshold < 0:
            raise ValueError(
                f"trainer.early_stopping_threshold must be >= 0, got {self.early_stopping_threshold}."
            )
        from dataflex.train.best_model import metric_key

        if metric_key(self.metric_for_best_model).removeprefix("eval/").split("/")[0] not in ("loss", "ppl"):
            raise ValueError(
                f"trainer.metric_for_best_model={self.metric_for_best_model!r}: use an eval metric, "
                "eval/loss, eval/ppl, eval/loss/<domain> or eval/ppl/<domain>."
            )
        if not (self.load_best_model_at_end or self.early_stopping_patience):
            return
        what = "load_best_model_at_end" if self.load_best_model_at_end else "early_stopping_patience"
        if not self.eval_steps:
            raise ValueError(f"trainer.{what} needs evaluations: set trainer.eval_steps > 0.")
        if self.load_best_model_at_end and (not self.save_steps or self.save_steps % self.eval_steps):
            raise ValueError(
                f"trainer.load_best_model_at_end needs a checkpoint at evaluated steps: set "
                f"trainer.save_steps to a multiple of trainer.eval_steps={self.eval_steps} "
                f"(got save_steps={self.save_steps})."
            )


def check_optim(optim: str, optim_args: dict[str, Any] | None = None) -> None:
    """A known name, or a class path that imports, and `optim_args` its constructor accepts (checked before
    anything is loaded)."""
    if optim not in OPTIMIZERS and "." not in optim:
        raise ValueError(
            f"trainer.optim={optim!r} is unknown; choose one of {OPTIMIZERS} or give an optimizer "
            "class path such as torch.optim.RMSprop."
        )
    if optim in OPTIMIZERS and not optim_args:
        return
    import inspect

    from dataflex.train.optim import optimizer_class

    try:
        cls = optimizer_class(optim)
    except Exception as err:  # noqa: BLE001 - ImportError, AttributeError, ValueError: all mean "not found"
        raise ValueError(f"trainer.optim={optim!r}: cannot import this optimizer class ({err}).") from err
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(optim_args or {}) - set(params) - {"params"})
        if unknown:
            accepted = [n for n in params if n not in ("params", "lr")]
            raise ValueError(
                f"trainer.optim_args: {unknown} are not arguments of {cls.__name__} "
                f"(trainer.optim={optim}); it accepts {accepted}."
            )


def _check_positive(key: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{key} must be > 0, got {value}.")


@dataclass
class StaticTrainerConfig(TrainingArguments):
    """`trainer=static`: plain training, the baseline every dynamic trainer is compared with."""

    _target_: str = "dataflex.train.trainer.static.StaticTrainer"
