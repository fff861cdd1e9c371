"""Schemas of the weighters (`component=<name>` under `trainer=dynamic_weight`); torch-free. Their
`__post_init__` holds the value checks, which the weighter classes run by building their schema."""

from __future__ import annotations

from dataclasses import dataclass

LOSS_STRATEGIES = ("linupper", "uniform", "quadratic", "extremes")
TEMPERATURE_SCHEDULES = ("constant", "step", "linear")
ADAPT_AGGREGATES = ("mean", "max")


@dataclass
class LossWeighterConfig:
    """`component=loss` (Sow et al., ICLR 2025): weights = softmax(f(h(loss)) / r) over the global batch."""

    _target_: str = "dataflex.train.weighter.loss_weighter.LossWeighter"
    strategy: str = "linupper"
    """linupper (down-weight low-loss samples, cap the rest), uniform (baseline), quadratic (favour
    mid-range losses), extremes (favour both ends)."""
    delta: float = 1.0
    """Losses are min-max normalised to [-delta, delta] over the global batch."""
    temperature: float = 1.0
    """The paper's r (KL-regularisation strength): small = sharp weights, large = near uniform."""
    temperature_schedule: str = "constant"
    """constant (fixed r); step (r = temperature_start for the first temperature_warmup_steps weighted steps,
    then r: the authors' large-scale recipe); linear (anneal temperature_start -> r over those steps)."""
    temperature_start: float = 100.0
    temperature_warmup_steps: int = 0
    """Weighted steps (counted from the end of trainer.warmup_step) spent at/annealing from
    temperature_start."""

    def __post_init__(self) -> None:
        if self.strategy not in LOSS_STRATEGIES:
            raise ValueError(
                f"component.strategy={self.strategy!r} is unknown; choose one of {list(LOSS_STRATEGIES)}."
            )
        if not self.delta > 0:
            raise ValueError(
                f"component.delta must be > 0 (losses are normalised to [-delta, delta]), got {self.delta}."
            )
        if not self.temperature > 0:
            raise ValueError(f"component.temperature (the paper's r) must be > 0, got {self.temperature}.")
        if self.temperature_schedule not in TEMPERATURE_SCHEDULES:
            raise ValueError(
                f"component.temperature_schedule={self.temperature_schedule!r} is unknown; choose one of "
                f"{list(TEMPERATURE_SCHEDULES)}."
            )
        if not self.temperature_start > 0:
            raise ValueError(f"component.temperature_start must be > 0, got {self.temperature_start}.")
        if self.temperature_warmup_steps < 0:
            raise ValueError(
                f"component.temperature_warmup_steps must be >= 0, got {self.temperature_warmup_steps}."
            )


@dataclass
class AdaptWeighterConfig:
    """`component=adapt`: weight = sigmoid((cos(sample, anchors) - batch mean) / tau), normalised over the
    global batch."""

    _target_: str = "dataflex.train.weighter.adapt_weighter.AdaptWeighter"
    tau: float = 0.05
    """Sigmoid temperature on the (centred) cosine similarity. The original port uses 1 on raw cosines, which
    gives near-uniform weights on anisotropic LM embeddings (cosines within ~0.06 of each other)."""
    anchor_domains: list[str] | None = None
    """Eval-split domains used as anchors (e.g. [target]); null: the whole eval split."""
    max_anchors: int | None = 256
    """Anchor rows drawn once (seeded) from those domains; null: all of them."""
    refresh_interval: int = 50
    """Recompute anchor embeddings with the current model every this many optimizer steps."""
    aggregate: str = "mean"
    """mean: mean cosine similarity to the anchors; max: similarity to the nearest anchor."""
    clip_min: float | None = None
    """Optional bounds on sigmoid outputs before normalisation."""
    clip_max: float | None = None
    embed_batch_size: int = 64
    center: bool = True
    """Subtract the batch's mean similarity before the sigmoid (raw LM cosines all sit near one value and
    would saturate it); false: the plain sigmoid(similarity / tau)."""
    reuse_forward: bool = True
    """Pool the batch's embeddings from the training forward (no extra cost); false: a separate no-grad
    forward with sample_embeddings."""
    normalize: bool = True
    """true (ours): weights normalised over the global batch (loss scale of the plain loss, uniform = plain);
    false (the original DataFlex port): unnormalised sigmoid weights as a per-sample learning rate,
    L = mean_i u_i l_i."""
    pooling: str = "mean"
    """mean (ours, as near/tsds) | position_weighted (the original port: the k-th real token weighs k)."""

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "position_weighted"):
            raise ValueError(f"component.pooling must be mean or position_weighted, got {self.pooling!r}.")
        if not self.tau > 0:
            raise ValueError(
                f"component.tau must be > 0 (weights are sigmoid(similarity / tau)), got {self.tau}."
            )
        if self.refresh_interval <= 0:
            raise ValueError(
                f"component.refresh_interval must be > 0 optimizer steps, got {self.refresh_interval}."
            )
        if self.max_anchors is not None and self.max_anchors <= 0:
            raise ValueError(
                f"component.max_anchors must be > 0 or null (all eval rows), got {self.max_anchors}."
            )
        if self.aggregate not in ADAPT_AGGREGATES:
            raise ValueError(
                f"component.aggregate={self.aggregate!r} is unknown; choose one of {list(ADAPT_AGGREGATES)}."
            )
        for key, value in (("clip_min", self.clip_min), ("clip_max", self.clip_max)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"component.{key} clips sigmoid weights and must be in [0, 1] or null, got {value}."
                )
        if self.clip_min is not None and self.clip_max is not None and self.clip_min > self.clip_max:
            raise ValueError(f"component.clip_min={self.clip_min} > component.clip_max={self.clip_max}.")
        if self.embed_batch_size <= 0:
            raise ValueError(f"component.embed_batch_size must be > 0, got {self.embed_batch_size}.")

        if self.anchor_domains is not None and not list(self.anchor_domains):
            raise ValueError(
                "component.anchor_domains=[] names no anchor domain; list the eval domains to anchor "
                "on (e.g. [target]) or set it to null to anchor on the whole eval split."
            )


@dataclass
class CustomWeighterConfig:
    """`component=custom`: the spec's example weighter (also a template for your own)."""

    _target_: str = "dataflex.train.weighter.custom_weighter.CustomWeighter"
    strategy: str = "uniform"


@dataclass
class Rho1WeighterConfig:
    """`component=rho1` (Lin et al., 2024): train only on the top `ratio` of tokens by excess loss
    loss_model - loss_reference."""

    _target_: str = "dataflex.train.weighter.rho1_weighter.Rho1Weighter"
    reference_model: str | None = None
    """Local HF model folder of the reference model (same tokenizer). Required."""
    ratio: float = 0.6
    """Fraction of the global batch's supervised tokens kept (the paper's k%)."""
    reference_dtype: str = "float32"
    warmup_step: int | None = 0
    """Plain steps before token selection; overrides trainer.warmup_step. 0 (default): from the first step, as
    the paper; null: follow trainer.warmup_step (20 by default)."""

    def __post_init__(self) -> None:
        if not self.reference_model:
            raise ValueError(
                "component=rho1 needs a reference model: set component.reference_model=/path/to/hf_model "
                "(a local HF folder, e.g. the final_model of a run trained on your high-quality/target "
                "data; it must share the tokenizer)."
            )
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(
                "component.ratio is the fraction of tokens trained on and must be in (0, 1], got "
                f"{self.ratio}."
            )
        if self.warmup_step is not None and self.warmup_step < 0:
            raise ValueError(f"component.warmup_step must be >= 0 or null, got {self.warmup_step}.")


@dataclass
class JointUpdateAwareWeighterConfig:
    """`component=joint_update_aware` (DataFlex PR #58): weights on the simplex maximising
    s^T w - beta/2 w^T S w + tau H(w) over the global batch (S: cosine Gram of the samples' embeddings,
    s: their alignment with the eval set's mean embedding), by a damped fixed-point iteration."""

    _target_: str = "dataflex.train.weighter.joint_update_aware.JointUpdateAwareWeighter"
    beta: float = 0.1
    """Redundancy penalty: how much a sample's weight drops when similar samples already carry weight."""
    tau: float = 0.05
    """Entropy temperature (> 0): smaller gives sharper weights."""
    iters: int = 5
    """Damped fixed-point iterations from the uniform weights."""
    damping: float = 1.0
    """Step of each iteration in (0, 1]; 1: the plain fixed-point iteration."""
    mode: str = "full"
    """full | align_only (s only) | diverse_only (redundancy term only) | uniform (1/N): PR #58 ablations."""
    normalize: bool = True
    """L2-normalise embeddings and target (S is then the cosine Gram matrix)."""
    pooling: str = "mean"
    """mean | position_weighted pooling of the last hidden state (PR #58 defaults to the last token)."""
    target_refresh: int = 50
    """Recompute the eval set's mean embedding with the current model every this many optimizer steps."""
    max_targets: int | None = 256
    """Eval rows averaged into the target (drawn once, seeded); null: all of them."""
    embed_batch_size: int = 64

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"component.tau must be > 0 (the entropy term), got {self.tau}.")
        if not 0.0 < self.damping <= 1.0:
            raise ValueError(f"component.damping must be in (0, 1], got {self.damping}.")
        if self.iters < 1:
            raise ValueError(f"component.iters must be >= 1, got {self.iters}.")
        if self.mode not in ("full", "align_only", "diverse_only", "uniform"):
            raise ValueError(
                f"component.mode={self.mode!r} is unknown; choose full, align_only, diverse_only or uniform."
            )
        if self.pooling not in ("mean", "position_weighted"):
            raise ValueError(f"component.pooling must be mean or position_weighted, got {self.pooling!r}.")
        if self.target_refresh < 1 or self.embed_batch_size < 1:
            raise ValueError("component.target_refresh and component.embed_batch_size must be >= 1.")
        if self.max_targets is not None and self.max_targets < 1:
            raise ValueError(f"component.max_targets must be >= 1 or null, got {self.max_targets}.")


@dataclass
class PrecomputedWeighterConfig:
    """`component=precomputed`: loss weights from scores computed before training (`score_field`: a numeric
    field of the rows, or `score_path`: a .npy / one-number-per-line file aligned with the training items);
    the mapping is documented in dataflex/train/weighter/precomputed_weighter.py."""

    _target_: str = "dataflex.train.weighter.precomputed_weighter.PrecomputedWeighter"
    score_field: str | None = None
    """The numeric field of each training row holding its score."""
    score_path: str | None = None
    """...or a .npy array / text file with one score per training item, in the data's order."""
    mapping: str = "softmax"
    """softmax: w = softmax(+-z / temperature) over the global batch, z = the scores standardised over all
    training items; proportional: w = s / batch sum (scores >= 0)."""
    temperature: float = 1.0
    """softmax only: large = near uniform, small = the batch's best samples take the weight."""
    higher_is_better: bool = True
    """softmax: false gives low scores the weight (proportional needs true)."""

    def __post_init__(self) -> None:
        if bool(self.score_field) == bool(self.score_path):
            raise ValueError(
                "component=precomputed needs exactly one of component.score_field=<the rows' numeric "
                "field> and component.score_path=<.npy or one score per line, aligned with the data>."
            )
        if self.mapping not in ("softmax", "proportional"):
            raise ValueError(f"component.mapping must be softmax or proportional, got {self.mapping!r}.")
        if not self.temperature > 0:
            raise ValueError(f"component.temperature must be > 0, got {self.temperature}.")
        if self.mapping == "proportional" and not self.higher_is_better:
            raise ValueError(
                "component.mapping=proportional weights samples by their (non-negative) scores; "
                "component.higher_is_better=false needs component.mapping=softmax."
            )


SCHEMAS: dict[str, type] = {
    "loss": LossWeighterConfig,
    "adapt": AdaptWeighterConfig,
    "custom": CustomWeighterConfig,
    "rho1": Rho1WeighterConfig,
    "joint_update_aware": JointUpdateAwareWeighterConfig,
    "precomputed": PrecomputedWeighterConfig,
}
