"""Schemas of the per-step selectors (`component=<name>` under `trainer=per_step`); torch-free. Each keeps b
of the step's B candidates (dataflex/train/perstep/selectors.py); parameters named like run-context fields
(seed, eval_data, pad_token_id, accelerator, tokenizer) come from the run, not from here."""

from __future__ import annotations

from dataclasses import dataclass

GHOST_METHODS = ("auto", "ghost", "materialize")


def _check_method(method: str) -> None:
    if method not in GHOST_METHODS:
        raise ValueError(f"component.method={method!r} is unknown; choose one of {list(GHOST_METHODS)}.")


@dataclass
class UniformPerStepConfig:
    """`component=uniform`: b of B uniformly at random (seeded by trainer.seed and the step): the baseline."""

    _target_: str = "dataflex.train.perstep.selectors.UniformPerStep"


@dataclass
class MaxLossPerStepConfig:
    """`component=max_loss`: the b highest training losses (token mean per row; one no-grad forward of B)."""

    _target_: str = "dataflex.train.perstep.selectors.MaxLossPerStep"


@dataclass
class RhoLossPerStepConfig:
    """`component=rho_loss` (Mindermann et al. 2022): the b highest training loss minus reference loss."""

    _target_: str = "dataflex.train.perstep.selectors.RhoLossPerStep"
    reference_model: str | None = None
    """Folder of the reference model (a full model or a LoRA adapter, same tokenizer), e.g. the final_model of
    a run on the holdout/target data. Required."""

    def __post_init__(self) -> None:
        if not self.reference_model:
            raise ValueError(
                "component=rho_loss needs component.reference_model=<folder of a trained model with the "
                "training tokenizer>, e.g. the final_model of `dataflex-run trainer=static` on the target "
                "domain."
            )


@dataclass
class GradNormPerStepConfig:
    """`component=grad_norm`: the b largest per-sample gradient norms (ghost norms, none materialised)."""

    _target_: str = "dataflex.train.perstep.selectors.GradNormPerStep"
    method: str = "auto"
    """How the squared norms are computed: auto (the cheaper per layer), ghost (token kernels) or
    materialize."""

    def __post_init__(self) -> None:
        _check_method(self.method)


@dataclass
class GreatsPerStepConfig:
    """`component=greats` (Wang et al. NeurIPS 2024): greedy lr <g_i, g_val> - lr^2 sum_chosen <g_i, g_j>."""

    _target_: str = "dataflex.train.perstep.selectors.GreatsPerStep"
    val_size: int = 4
    """Validation rows drawn per step (seeded by trainer.seed and the step) for the validation gradient."""
    target_domain: str | None = None
    """Draw them from this eval-split domain's rows; null: the whole eval split."""
    self_interaction: bool = False
    """Also subtract lr^2/2 ||g_i||^2 (the second-order self term the authors' code leaves out)."""
    method: str = "auto"
    """Ghost dot products per layer: auto (the cheaper), ghost (token kernels), materialize."""

    def __post_init__(self) -> None:
        if self.val_size <= 0:
            raise ValueError(f"component.val_size must be > 0, got {self.val_size}.")
        _check_method(self.method)


SCHEMAS: dict[str, type] = {
    "uniform": UniformPerStepConfig,
    "max_loss": MaxLossPerStepConfig,
    "rho_loss": RhoLossPerStepConfig,
    "grad_norm": GradNormPerStepConfig,
    "greats": GreatsPerStepConfig,
}
