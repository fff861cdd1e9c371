"""Schemas of the selectors (`component=<name>` under `trainer=dynamic_select`); torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

PROJ_TYPES = ("sparse", "rademacher", "gaussian", "kronecker")
KRONECKER_NEEDS_SGD = (
    "component.proj_type=kronecker projects per-sample gradients without forming them, which "
    "Adam preconditioning (elementwise g^2) needs: set component.gradient_type=sgd, or use "
    "component.proj_type=sparse for Adam features."
)
TIE_BREAKS = ("random", "mean_rank")
"""How `component=icons` orders candidates with equal vote counts."""


@dataclass
class SelectorConfig:
    _target_: str = MISSING
    cache_dir: str | None = None
    """Scratch folder of the selector (None: <run dir>/selector)."""


@dataclass
class SeededSelectorConfig(SelectorConfig):
    seed: int | None = None
    """Seed of the selector's draws and projections (None: trainer.seed)."""


@dataclass
class CustomSelectorConfig(SelectorConfig):
    """`component=custom`: the spec's CustomSelector example (returns the first num_samples ids)."""

    _target_: str = "dataflex.train.selector.custom_selector.CustomSelector"


@dataclass
class RandomSelectorConfig(SeededSelectorConfig):
    """`component=random`: a seeded uniform draw from the candidates."""

    _target_: str = "dataflex.train.selector.random_selector.RandomSelector"
    replacement: bool = False


@dataclass
class LossSelectorConfig(SeededSelectorConfig):
    """`component=loss`: sample by loss bucket (low / medium / high by quantiles), the focus bucket
    weighted."""

    _target_: str = "dataflex.train.selector.loss_selector.LossSelector"
    focus: str = "medium"
    """Which loss bucket to favour: low | medium | high."""
    focus_weight: float = 5.0
    """Weight of the focus bucket (others weigh 1)."""
    quantiles: list[float] = field(default_factory=lambda: [0.33, 0.66])
    """Loss quantiles separating low | medium | high."""
    temperature: float = 1.0
    """Sampling probability ∝ weight^(1/temperature): → 0 only the focus bucket, large → uniform."""
    replacement: bool = False

    def __post_init__(self) -> None:
        if self.focus not in ("low", "medium", "high"):
            raise ValueError(f"component.focus must be low, medium or high, got {self.focus!r}.")
        if self.focus_weight <= 0:
            raise ValueError(f"component.focus_weight must be > 0, got {self.focus_weight}.")
        if self.temperature <= 0:
            raise ValueError(f"component.temperature must be > 0, got {self.temperature}.")
        q = list(self.quantiles)
        if len(q) != 2 or not 0 < q[0] < q[1] < 1:
            raise ValueError(f"component.quantiles must be two increasing numbers in (0, 1), got {q}.")


@dataclass
class DeltaLossSelectorConfig(SeededSelectorConfig):
    """`component=delta_loss`: sample inside a window of the loss-drop ranking that slides from the
    largest drops to the smallest over the updates (sigmoid schedule)."""

    _target_: str = "dataflex.train.selector.delta_loss_selector.DeltaLossSelector"
    window_size: float = 0.2
    """Window width as a fraction of the scored candidates."""
    steepness: float = 10.0
    """Steepness k of the sigmoid that moves the window."""
    outside_weight: float = 0.025
    """Sampling weight of candidates outside the window (inside: 1)."""
    replacement: bool = False
    """false: a selection needing more distinct samples than have a positive weight is refused (with the fix);
    true: draw with replacement."""

    def __post_init__(self) -> None:
        if not 0 < self.window_size <= 1:
            raise ValueError(f"component.window_size must be in (0, 1], got {self.window_size}.")
        if self.outside_weight < 0:
            raise ValueError(f"component.outside_weight must be >= 0, got {self.outside_weight}.")


@dataclass
class TargetSelectorConfig(SeededSelectorConfig):
    target_domain: str | None = None
    """Validation/target set: the eval split of this domain (comma-separated: several subtasks).
    None: trainer.target_domain / trainer.target_dataset."""
    target_dataset: str | None = None
    """...or a named dataset (any data.dataset spec, tokenized like the training data)."""
    target_split: str = "eval"
    """Split the target rows come from, for target_domain and target_dataset alike: eval | train (train: the
    domain's first training rows, which stay in the candidate pool)."""
    target_max_samples: int | None = 64
    """At most this many target rows per subtask (the first ones)."""

    def needs_target(self) -> bool:
        """Whether this selector needs a target set (near/tsds with precomputed files do not)."""
        return not (getattr(self, "indices_path", None) or getattr(self, "probs_path", None))

    def _check_target(self, name: str) -> None:
        if self.target_domain and self.target_dataset:
            raise ValueError(
                f"component={name}: set only one of component.target_domain and component.target_dataset."
            )
        if self.target_split not in ("eval", "train"):
            raise ValueError(f"component.target_split must be eval or train, got {self.target_split!r}.")
        if self.target_max_samples is not None and self.target_max_samples <= 0:
            raise ValueError(
                f"component.target_max_samples must be > 0 or null, got {self.target_max_samples}."
            )


@dataclass
class LessSelectorConfig(TargetSelectorConfig):
    """`component=less` (Xia et al. 2024): Adam-preconditioned training gradients vs SGD target gradients,
    projected and normalised; score = mean cosine per target subtask, max over subtasks; top-k."""

    _target_: str = "dataflex.train.selector.less_selector.LessSelector"
    proj_dim: int = 2048
    """Projection width. The official LESS scripts use 8192; we default to 2048 so that the features of a
    candidate pool (pool x proj_dim float32: 50k rows = 0.4 GB instead of 1.6 GB) and the dense-projection
    cost stay 4x lower on CPU and small GPUs. Set 8192 to match the paper's runs."""
    proj_type: str = "sparse"
    """sparse (count sketch, fast on CPU) | rademacher | gaussian (dense, as TRAK) | kronecker (LoGra:
    projected without forming per-sample gradients, fastest; needs gradient_type=sgd)."""
    gradient_type: str = "adam"
    """Training-sample features: adam (LESS) | sgd."""
    adam_variant: str = "paper"
    """Adam features: `paper` (m-hat / (sqrt(v-hat) + eps), bias-corrected, the optimizer's betas and eps) or
    `code` (the official LESS code exactly: m / sqrt(v + eps), eps inside the root, fixed betas 0.9/0.999,
    no bias correction). Both are ~sign(g) before the optimizer's first step (a warning says so)."""
    bias_correction: bool = True
    """paper variant only: false drops the bias correction (neither the paper nor the code; kept for
    compatibility; adam_variant=code is the code's form)."""

    def __post_init__(self) -> None:
        self._check_target("less")
        self._check_grad()

    def _check_grad(self) -> None:
        if self.proj_dim <= 0:
            raise ValueError(f"component.proj_dim must be > 0, got {self.proj_dim}.")
        if self.proj_type not in PROJ_TYPES:
            raise ValueError(f"component.proj_type must be one of {PROJ_TYPES}, got {self.proj_type!r}.")
        if self.gradient_type not in ("adam", "sgd"):
            raise ValueError(f"component.gradient_type must be adam or sgd, got {self.gradient_type!r}.")
        if self.adam_variant not in ("paper", "code"):
            raise ValueError(f"component.adam_variant must be paper or code, got {self.adam_variant!r}.")
        if self.proj_type == "kronecker" and self.gradient_type == "adam":
            raise ValueError(KRONECKER_NEEDS_SGD)


@dataclass
class ClusterLessSelectorConfig(LessSelectorConfig):
    """`component=cluster_less`: k-means on embeddings once; LESS features of a few representatives per
    cluster; each sample gets its cluster's score."""

    _target_: str = "dataflex.train.selector.cluster_less_selector.ClusterLessSelector"
    num_clusters: int | None = None
    """None: ceil(N / cluster_size)."""
    cluster_size: int = 64
    samples_per_cluster: int = 3
    kmeans_iters: int = 20

    def __post_init__(self) -> None:
        self._check_target("cluster_less")
        self._check_grad()
        if self.num_clusters is not None and self.num_clusters <= 0:
            raise ValueError(f"component.num_clusters must be > 0 or null, got {self.num_clusters}.")
        for key in ("cluster_size", "samples_per_cluster", "kmeans_iters"):
            if getattr(self, key) <= 0:
                raise ValueError(f"component.{key} must be > 0, got {getattr(self, key)}.")


@dataclass
class IconsSelectorConfig(LessSelectorConfig):
    """`component=icons` (Wu et al. 2025, arXiv 2501.00654): LESS influence of each candidate on each target
    task (the comma-separated target_domain, or target_dataset's domains; mean over the task's rows), each
    task votes for its top `vote_fraction`, the most-voted candidates are selected. Deviations:
    dataflex/train/selector/icons_selector.py."""

    _target_: str = "dataflex.train.selector.icons_selector.IconsSelector"
    vote_fraction: float | None = None
    """Share p of the candidates each task votes for (its influence >= its (1 - p) quantile). None: the
    selected share, num_samples / candidates (the authors' code uses one top_percent for both)."""
    tie_break: str = "random"
    """Order among equal vote counts (the authors' code leaves it to np.argsort): random (seeded) | mean_rank
    (higher mean within-task rank first, then seeded random)."""

    def __post_init__(self) -> None:
        self._check_target("icons")
        self._check_grad()
        if self.vote_fraction is not None and not 0 < self.vote_fraction <= 1:
            raise ValueError(
                f"component.vote_fraction must be in (0, 1] or null (the selected share), got "
                f"{self.vote_fraction}."
            )
        if self.tie_break not in TIE_BREAKS:
            raise ValueError(f"component.tie_break must be one of {TIE_BREAKS}, got {self.tie_break!r}.")


@dataclass
class PrecomputedSelectorConfig(SeededSelectorConfig):
    """`component=precomputed`: selection by scores computed before training (`score_field`: a numeric field
    of the rows, or `score_path`: a .npy / one-number-per-line file aligned with the training items), top-k
    or a uniform draw above a threshold (dataflex/train/selector/precomputed_selector.py)."""

    _target_: str = "dataflex.train.selector.precomputed_selector.PrecomputedSelector"
    score_field: str | None = None
    """The numeric field of each training row holding its score."""
    score_path: str | None = None
    """...or a .npy array / text file with one score per training item, in the data's order."""
    mode: str = "top_k"
    """top_k: the best-scoring candidates of each update; threshold: a seeded uniform draw among the
    candidates whose score passes component.threshold."""
    threshold: float | None = None
    """mode=threshold: the score a candidate must reach (>=; <= when higher_is_better=false)."""
    higher_is_better: bool = True
    """false: low scores are good (top_k takes the lowest, threshold is an upper bound)."""
    replacement: bool = False
    """mode=threshold: draw with replacement when fewer candidates pass than an update needs."""

    def __post_init__(self) -> None:
        if bool(self.score_field) == bool(self.score_path):
            raise ValueError(
                "component=precomputed needs exactly one of component.score_field=<the rows' numeric "
                "field> and component.score_path=<.npy or one score per line, aligned with the data>."
            )
        if self.mode not in ("top_k", "threshold"):
            raise ValueError(f"component.mode must be top_k or threshold, got {self.mode!r}.")
        if self.mode == "threshold" and self.threshold is None:
            raise ValueError("component.mode=threshold needs component.threshold=<the score to pass>.")
        if self.mode == "top_k" and self.threshold is not None:
            raise ValueError(
                "component.threshold is only read with component.mode=threshold; remove it or set the mode."
            )


@dataclass
class NearSelectorConfig(TargetSelectorConfig):
    """`component=near`: nearest neighbours of the target examples in embedding space, round-robin over
    the targets (rank-0 neighbours of every target, then rank-1, ...)."""

    _target_: str = "dataflex.train.selector.near_selector.NearSelector"
    encoder_path: str | None = None
    """Local HF encoder dir for embeddings (None: the training model's mean-pooled last hidden state)."""
    indices_path: str | None = None
    """Precomputed (targets x K) .npy of training ids, as the original offline NEAR writes (skips
    embedding)."""

    def __post_init__(self) -> None:
        if not self.indices_path:
            self._check_target("near")


@dataclass
class TsdsSelectorConfig(TargetSelectorConfig):
    """`component=tsds` (Liu et al. 2024): optimal-transport distribution alignment with a KDE diversity
    regulariser; samples drawn from the resulting probabilities. Exact chunked neighbour search (faiss
    IndexFlatL2 when installed), memory checked before training; deviations:
    dataflex/train/selector/tsds_selector.py."""

    _target_: str = "dataflex.train.selector.tsds_selector.TsdsSelector"
    encoder_path: str | None = None
    probs_path: str | None = None
    """Precomputed .npy of sampling probabilities over the training set (skips the computation)."""
    max_K: int = 5000
    """Nearest candidates considered per target (the authors' default; capped as cap_neighbours says)."""
    kde_K: int = 1000
    """Neighbourhood size of the density estimate (the authors' default; capped as cap_neighbours says)."""
    cap_neighbours: bool = True
    """Cap max_K and kde_K at candidates // 10, as the authors' code (false: only at the number of
    candidates)."""
    sigma: float | None = None
    """Kernel width of the KDE. None (default): the authors' 0.75 scaled to the embedding space, 0.75 /
    sqrt(2) x the candidates' median pairwise distance (= 0.75 for embeddings spread like a sentence
    encoder's; a training model's states are often far more compressed, where a fixed 0.75 makes the KDE flat
    and TSDS uniform). A number: fixed (0.75: the authors' value; 0: no density correction). A near-uniform
    KDE logs a warning."""
    alpha: float = 0.5
    """Trade-off between distribution alignment (→1) and diversity (→0)."""
    C: float = 5.0
    """A constant on the scale of the embedding norms (the authors' 5; our embeddings are L2-normalised)."""
    replacement: bool = True
    """Draw with replacement (the paper's multinomial sampling)."""

    def __post_init__(self) -> None:
        if not self.probs_path:
            self._check_target("tsds")
        if not 0 < self.alpha < 1:
            raise ValueError(f"component.alpha must be in (0, 1), got {self.alpha}.")
        if (self.sigma is not None and self.sigma < 0) or self.C <= 0 or self.max_K < 2 or self.kde_K < 1:
            raise ValueError(
                "component.sigma >= 0, component.C > 0, component.max_K >= 2 and component.kde_K >= 1 "
                f"required (got {self.sigma}, {self.C}, {self.max_K}, {self.kde_K})."
            )


@dataclass
class NiceSelectorConfig(LessSelectorConfig):
    """`component=nice` (Wang et al. 2025): like LESS, but each target's feature is the policy gradient of a
    reward (reward model or token F1) over responses sampled from the current model."""

    _target_: str = "dataflex.train.selector.nice_selector.NiceSelector"
    reward: str = "model"
    """model (a sequence-classification reward model) | f1 (token F1 against the reference answer)."""
    reward_model: str | None = None
    """Local HF sequence-classification model dir, or `tiny` (a small random one: tests only)."""
    mc_samples: int = 20
    """Responses sampled per target prompt (the authors' 20; costly on CPU: lower it for smoke runs)."""
    max_new_tokens: int = 100
    """The authors' 100."""
    temperature: float = 1.2
    """Sampling temperature (the authors' 1.2)."""
    top_k: int = 50
    """Top-k sampling (the authors' 50; 0: off)."""
    top_p: float = 0.95
    """Nucleus sampling (the authors' 0.95; 1.0: off)."""
    include_eos: bool = False
    """Keep the EOS token in the response whose gradient is taken (the authors' code does not)."""

    def __post_init__(self) -> None:
        self._check_target("nice")
        self._check_grad()
        if self.reward not in ("model", "f1"):
            raise ValueError(f"component.reward must be model or f1, got {self.reward!r}.")
        if self.reward == "model" and not self.reward_model:
            raise ValueError(
                "component=nice with component.reward=model needs component.reward_model=<local HF "
                "sequence-classification dir> (or `tiny` for tests), or use component.reward=f1."
            )
        for key in ("mc_samples", "max_new_tokens"):
            if getattr(self, key) <= 0:
                raise ValueError(f"component.{key} must be > 0, got {getattr(self, key)}.")
        if self.temperature <= 0:
            raise ValueError(f"component.temperature must be > 0, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0 or self.top_k < 0:
            raise ValueError(
                f"component.top_p must be in (0, 1] and component.top_k >= 0, got {self.top_p} and "
                f"{self.top_k}."
            )


SCHEMAS: dict[str, type] = {
    "random": RandomSelectorConfig,
    "loss": LossSelectorConfig,
    "delta_loss": DeltaLossSelectorConfig,
    "less": LessSelectorConfig,
    "cluster_less": ClusterLessSelectorConfig,
    "icons": IconsSelectorConfig,
    "precomputed": PrecomputedSelectorConfig,
    "near": NearSelectorConfig,
    "tsds": TsdsSelectorConfig,
    "nice": NiceSelectorConfig,
    "custom": CustomSelectorConfig,
}
