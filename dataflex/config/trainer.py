"""The `trainer=` group: training arguments (HF `TrainingArguments` names where they exist), the one update
schedule of the dynamic trainers, and one schema per trainer (static, dynamic_select, dynamic_mix,
dynamic_weight). Torch-free: registered at CLI start; `__post_init__` checks run before any data or model.

Schedule keys have one meaning in every trainer: `warmup_step` = steps before the first update,
`update_step` = steps between updates, `update_times` = number of updates, `train_step` / `max_steps` = the
total number of optimizer steps (a value the schedule derives must agree with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
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
    bucketed by length first. None: sized from the free memory (at most 16384; 2048 on a CPU)."""
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
    replay: str | None = None
    """A static recipe to train exactly: `dataflex-export`'s trained-id JSON, or a run dir (its data ledger).
    The step count, the ids of every step in order and their ledger weights come from it (max_steps and
    num_train_epochs are not used; the global batch must equal the recipe's). None: shuffled epochs."""


@dataclass
class PerStepTrainerConfig(TrainingArguments):
    """`trainer=per_step`: each step draws `candidate_batch_size` candidates, the per-step selector
    (`component=uniform|max_loss|rho_loss|grad_norm|greats`) keeps the global batch of them, and only those
    are trained (dataflex/train/perstep/trainer.py)."""

    _target_: str = "dataflex.train.perstep.trainer.PerStepTrainer"
    candidate_batch_size: int = 0
    """B: candidates drawn per step, of which the selector keeps the global batch size b (B >= b; 0: 2b)."""
    log_selection: bool = True
    """Append every step's candidates, kept ids and scores to <run dir>/selection/per_step.jsonl (rank 0)."""
    reuse_candidate_pass: bool = True
    """grad_norm/greats: build the kept rows' update from the candidate pass's saved layer inputs and output
    gradients instead of a second forward + backward, where that is exact (one process, no DeepSpeed, no
    mixed precision, no packing, no active dropout; otherwise the run says why and trains as usual)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.candidate_batch_size < 0:
            raise ValueError(
                f"trainer.candidate_batch_size must be >= 0 (0: twice the global batch), got "
                f"{self.candidate_batch_size}."
            )


@dataclass(frozen=True)
class UpdateSchedule:
    """When a dynamic trainer consults its component, counted in optimizer steps *done* (= the 0-based index
    of the next step): after `warmup_step` steps, then every `update_step` steps, `update_times` times. The
    decision made after `done` steps governs step `done` (0-based) onward: the very next batch. dynamic_select
    and dynamic_mix use their keys as is; dynamic_weight weighs every step after warmup (update_step=1)."""

    warmup_step: int
    update_step: int
    update_times: int

    @property
    def total_steps(self) -> int:
        return self.warmup_step + self.update_step * self.update_times

    def update_index(self, done: int) -> int | None:
        """The 1-based number of the update made after `done` steps; None when no update is due."""
        if done < self.warmup_step:
            return None
        k, rest = divmod(done - self.warmup_step, self.update_step)
        return k + 1 if rest == 0 and k < self.update_times else None

    def is_update(self, done: int) -> bool:
        return self.update_index(done) is not None

    def describe(self) -> str:
        return (
            f"warmup_step={self.warmup_step} + update_step={self.update_step} x "
            f"update_times={self.update_times}"
        )


@dataclass
class ScheduledTrainerConfig(TrainingArguments):
    """The schedule keys of dynamic_select and dynamic_mix and the one `max_steps` rule: the step count is
    the schedule's total; `max_steps <= 0` derives it, a value > 0 must equal it."""

    max_steps: int = 0
    """Derived from the schedule (warmup_step + update_step x update_times); if set it must equal that."""
    warmup_step: int = 0
    """Steps before the first update."""
    update_step: int = 1
    """Steps between updates; each update's decision governs the next `update_step` steps."""
    update_times: int = 1
    """Number of updates (the last one governs the final `update_step` steps)."""

    @property
    def schedule(self) -> UpdateSchedule:
        return UpdateSchedule(self.warmup_step, self.update_step, self.update_times)

    @property
    def schedule_steps(self) -> int:
        return self.schedule.total_steps

    @property
    def schedule_text(self) -> str:
        return self.schedule.describe()

    def check_schedule(self, kind: str, keys: bool = True) -> None:
        """The schedule keys (unless `keys` is False: a schedule not made of them) and the max_steps rule."""
        if keys and self.warmup_step < 0:
            raise ValueError(f"trainer.warmup_step must be >= 0, got {self.warmup_step}.")
        for key in ("update_step", "update_times") if keys else ():
            if getattr(self, key) <= 0:
                raise ValueError(f"trainer.{key} must be > 0, got {getattr(self, key)}.")
        total = self.schedule.total_steps
        if self.max_steps > 0 and self.max_steps != total:
            raise ValueError(
                f"trainer.max_steps={self.max_steps} conflicts with the {kind} schedule of {total} steps "
                f"({self.schedule_text}); trainer=dynamic_{kind} derives the step count from the "
                f"schedule: leave trainer.max_steps=0 or set it to {total}."
            )


SELECTION_ORDERS = ("shuffle", "selector")


@dataclass
class DynamicSelectTrainerConfig(ScheduledTrainerConfig):
    """`trainer=dynamic_select`: warmup on the selector's `warmup()`, then every `update_step` steps the
    selector picks `update_step x global_batch_size` samples, which are exactly the next phase's batches.
    Total steps = warmup_step + update_step x update_times."""

    _target_: str = "dataflex.train.trainer.dynamic_select.DynamicSelectTrainer"
    warmup_step: int = 10
    """Steps trained on the selector's warmup samples (random by default) before the first selection."""
    update_step: int = 20
    """Steps per phase: each selection picks update_step x global batch samples."""
    update_times: int = 3
    """How many selections (phases) after the warmup."""
    candidate_pool_size: int | None = None
    """Score only a seeded random subset of this many items per update (None: the whole training set)."""
    grad_batch_size: int | None = None
    """Micro-batch of the per-sample gradient features selectors compute (None: per_device_train_batch_size);
    per-sample gradients of a batch take batch x trainable-parameters floats per parameter block."""
    target_domain: str | None = None
    """Default validation/target set of the selectors that need one (less, cluster_less, near, tsds, nice):
    the eval split of this domain (comma-separated: several subtasks). component.target_domain overrides
    it."""
    target_dataset: str | None = None
    """...or a named dataset (any data.dataset spec) as the default target set."""
    selection_order: str = "shuffle"
    """Order in which a selection's samples are trained: `shuffle` (default: a random order seeded by
    (trainer.seed, update number), as LESS trains its subset with a shuffling sampler and the original
    DataFlex rebuilds a RandomSampler over the selected ids) or `selector` (the order the selector returned:
    for top-k selectors that is descending score, i.e. a score-sorted curriculum; ask for it explicitly)."""

    def __post_init__(self) -> None:
        if self.selection_order not in SELECTION_ORDERS:
            raise ValueError(
                f"trainer.selection_order must be one of {SELECTION_ORDERS}, got {self.selection_order!r}."
            )
        self.check_schedule("select")
        if self.target_domain and self.target_dataset:
            raise ValueError("set only one of trainer.target_domain and trainer.target_dataset.")
        if self.grad_batch_size is not None and self.grad_batch_size <= 0:
            raise ValueError(f"trainer.grad_batch_size must be > 0 or null, got {self.grad_batch_size}.")
        if self.candidate_pool_size is not None and self.candidate_pool_size <= 0:
            raise ValueError(
                f"trainer.candidate_pool_size must be > 0 or null, got {self.candidate_pool_size}."
            )
        super().__post_init__()


MIXTURE_SAMPLE_RULES = ("mixture", "stratified", "uniform")


@dataclass
class DynamicMixTrainerConfig(ScheduledTrainerConfig):
    """`trainer=dynamic_mix`: domain proportions decided by a mixer (`component=<name>`) during training.

    Total optimizer steps = ``warmup_step + update_step * update_times`` (or ``train_step`` with
    ``static_mix``); ``max_steps`` is derived from that schedule."""

    _target_: str = "dataflex.train.trainer.dynamic_mix.DynamicMixTrainer"
    mixture_sample_rule: str = "uniform"
    """How the initial proportions are set: `mixture` (init_mixture_proportions or mixture_proportions_file,
    then adjusted by the mixer), `stratified` (proportional to each domain's size), `uniform` (equal)."""
    init_mixture_proportions: list[float] | None = None
    """One proportion per domain, in the data's domain order; must sum to 1 (not normalised for you).
    Only with mixture_sample_rule=mixture."""
    mixture_proportions_file: str | None = None
    """A JSON file `{"domains": [...], "proportions": [...]}` (e.g. DoReMi step 2's doremi_weights.json),
    matched to the data's domains by name; an alternative to init_mixture_proportions (rule mixture)."""
    static_mix: bool = False
    """Keep the initial proportions for the whole run (no mixer calls) and train `train_step` steps."""
    warmup_step: int = 50
    """Steps of training on the initial proportions before the first mixer call."""
    update_step: int = 25
    """The mixer is called every `update_step` steps after warmup; its proportions govern the next steps."""
    update_times: int = 10
    """Number of mixer calls (the last one governs the final `update_step` steps)."""
    train_step: int | None = None
    """Total steps with static_mix=true (required there, refused otherwise)."""
    mixture_unit: str = "samples"
    """What the proportions are shares of: `samples` (each prefix of the batches within one sample per domain
    of them) or `tokens` (shares of the trained tokens, as OLMo-core's source mixtures; every item's length is
    read once at start; logged as `mixture/achieved_tokens/<domain>`). Pretrain blocks all have cutoff_len
    tokens, so there both units give the same batches."""

    @property
    def schedule(self) -> UpdateSchedule:
        """With static_mix: `train_step` steps and no update."""
        if self.static_mix:
            return UpdateSchedule(int(self.train_step or 0), 1, 0)
        return UpdateSchedule(self.warmup_step, self.update_step, self.update_times)

    @property
    def schedule_text(self) -> str:
        return f"static_mix: train_step={self.train_step}" if self.static_mix else self.schedule.describe()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mixture_unit not in ("samples", "tokens"):
            raise ValueError(
                f"trainer.mixture_unit={self.mixture_unit!r} is unknown; choose samples or tokens."
            )
        self._check_mixture_rule()
        if self.static_mix:
            if self.train_step is None or self.train_step <= 0:
                raise ValueError(
                    f"trainer.static_mix=true needs trainer.train_step > 0 (the number of steps), got "
                    f"{self.train_step}."
                )
        elif self.train_step is not None:
            raise ValueError(
                "trainer.train_step only applies with trainer.static_mix=true; the dynamic schedule "
                "has warmup_step + update_step * update_times steps."
            )
        self.check_schedule("mix", keys=not self.static_mix)

    def _check_mixture_rule(self) -> None:
        if self.mixture_sample_rule not in MIXTURE_SAMPLE_RULES:
            raise ValueError(
                f"trainer.mixture_sample_rule={self.mixture_sample_rule!r} is unknown; choose one of "
                f"{MIXTURE_SAMPLE_RULES}."
            )
        given = [
            k
            for k in ("init_mixture_proportions", "mixture_proportions_file")
            if getattr(self, k) is not None
        ]
        if self.mixture_sample_rule == "mixture":
            if not given:
                raise ValueError(
                    "trainer.mixture_sample_rule=mixture needs trainer.init_mixture_proportions=[...] "
                    "(one per domain) or trainer.mixture_proportions_file=<json>; or use "
                    "mixture_sample_rule=uniform|stratified."
                )
            if len(given) == 2:
                raise ValueError(
                    "Set only one of trainer.init_mixture_proportions and trainer.mixture_proportions_file."
                )
        elif given:
            raise ValueError(
                f"trainer.{given[0]} is only used with trainer.mixture_sample_rule=mixture (it is "
                f"{self.mixture_sample_rule!r}); set the rule to mixture or drop the key."
            )
        if self.init_mixture_proportions is not None:
            check_proportion_values(self.init_mixture_proportions, "trainer.init_mixture_proportions")
        if self.mixture_proportions_file is not None and not Path(self.mixture_proportions_file).is_file():
            raise FileNotFoundError(
                f"trainer.mixture_proportions_file={self.mixture_proportions_file}: no such file "
                f"({Path(self.mixture_proportions_file).resolve()})."
            )


def check_proportion_values(values: list[float], key: str, names: list[str] | None = None) -> None:
    """Finite, >= 0, not all zero, summing to 1 (within 1e-6). Proportions are never normalised silently: a
    vector that does not sum to 1 is more often a typo or a wrong domain order than an intent."""
    labels = (
        list(names)
        if names is not None and len(names) == len(values)
        else [f"#{i}" for i in range(len(values))]
    )
    listing = ", ".join(f"{n}={v:g}" for n, v in zip(labels, values))
    if not values:
        raise ValueError(f"{key} is empty; give one proportion per domain.")
    if any(not math.isfinite(float(v)) for v in values):
        raise ValueError(f"{key} must be finite numbers: {listing}.")
    negative = [n for n, v in zip(labels, values) if v < 0]
    if negative:
        raise ValueError(f"{key} must be >= 0; negative for {negative}: {listing}.")
    total = float(sum(values))
    if total <= 0:
        raise ValueError(f"{key} are all zero ({listing}); at least one domain needs a proportion > 0.")
    if abs(total - 1.0) > 1e-6:
        raise ValueError(
            f"{key} must sum to 1 (they sum to {total:.6g}: {listing}); DataFlex does not normalise "
            "them for you, divide by their sum."
        )


@dataclass
class DynamicWeightTrainerConfig(TrainingArguments):
    """`trainer=dynamic_weight`: plain training for `warmup_step` steps, then every step the weighter turns
    the per-sample losses of the global batch into the back-propagated loss (the schedule
    `UpdateSchedule(warmup_step, 1, total - warmup_step)`)."""

    _target_: str = "dataflex.train.trainer.dynamic_weight.DynamicWeightTrainer"
    warmup_step: int = 20
    """Optimizer steps of plain mean-loss training before the first weighted step."""
    train_step: int | None = None
    """Total optimizer steps including warmup (the spec's name). When set it replaces `max_steps`."""
    loss_reduction: str = "sample"
    """`sample` (default): the plain loss is the mean of per-sample token-mean losses and the weighted loss
    sum_i w_i l_i. `token`: the plain loss is trainer=static's token-mean loss and sample weights apply to
    length-normalised losses as in Sow et al.'s code (sum_i w_i N n_i / sum_j n_j l_i), so uniform weights
    reproduce trainer=static exactly. Either way uniform weights reproduce the warmup's plain loss."""

    def __post_init__(self) -> None:
        if self.train_step is not None:
            if self.train_step <= 0:
                raise ValueError(
                    "trainer.train_step must be > 0 (or null to use trainer.max_steps), got "
                    f"{self.train_step}."
                )
            self.max_steps = self.train_step
        super().__post_init__()
        if self.warmup_step < 0:
            raise ValueError(f"trainer.warmup_step must be >= 0, got {self.warmup_step}.")
        if self.max_steps > 0 and self.warmup_step >= self.max_steps:
            raise ValueError(
                f"trainer.warmup_step={self.warmup_step} >= the {self.max_steps} training steps: no step "
                "would ever be weighted. Lower trainer.warmup_step or raise trainer.train_step/max_steps."
            )
