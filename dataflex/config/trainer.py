"""Training arguments (HF `TrainingArguments` names where they exist) and the trainer config schemas."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "warmup_stable_decay")


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
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 64
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
    checkpoint folder. Resuming continues model, optimizer, scheduler, RNG, data position and component state."""
    save_final_model: bool = True
    bf16: bool = False
    fp16: bool = False
    loss_reduction: str = "token"
    """How the plain loss averages over the global batch: `token` (mean over all supervised tokens, as HF
    Trainer) or `sample` (mean of each sample's token-mean loss, the unit dynamic components work on)."""
    nan_policy: str = "stop"
    """On a NaN/inf loss: `stop` (error naming the step and sample ids) or `skip_step` (drop that update)."""
    disable_tqdm: bool = False

    def __post_init__(self) -> None:
        _check_positive("trainer.per_device_train_batch_size", self.per_device_train_batch_size)
        _check_positive("trainer.per_device_eval_batch_size", self.per_device_eval_batch_size)
        _check_positive("trainer.gradient_accumulation_steps", self.gradient_accumulation_steps)
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("Set trainer.max_steps > 0 or trainer.num_train_epochs > 0 (both are <= 0).")
        if self.learning_rate < 0:
            raise ValueError(f"trainer.learning_rate must be >= 0, got {self.learning_rate}.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"trainer.warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        for key in ("logging_steps", "eval_steps", "save_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"trainer.{key} must be >= 0, got {getattr(self, key)}.")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(f"trainer.lr_scheduler_type={self.lr_scheduler_type!r} is unknown; choose one of {SCHEDULERS}.")
        if self.bf16 and self.fp16:
            raise ValueError("Set at most one of trainer.bf16 and trainer.fp16.")
        if self.nan_policy not in ("stop", "skip_step"):
            raise ValueError(f"trainer.nan_policy must be 'stop' or 'skip_step', got {self.nan_policy!r}.")
        if self.save_total_limit is not None and self.save_total_limit <= 0:
            raise ValueError(f"trainer.save_total_limit must be > 0 or null, got {self.save_total_limit}.")
        if self.loss_reduction not in ("token", "sample"):
            raise ValueError(f"trainer.loss_reduction must be 'token' or 'sample', got {self.loss_reduction!r}.")


def _check_positive(key: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{key} must be > 0, got {value}.")


@dataclass
class StaticTrainerConfig(TrainingArguments):
    """`trainer=static`: plain training, the baseline every dynamic trainer is compared with."""

    _target_: str = "dataflex.train.trainer.static.StaticTrainer"
