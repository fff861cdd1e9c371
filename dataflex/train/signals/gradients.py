"""Per-sample gradient features from ONE batched forward and backward (never a batch-size-1 loop).

How: forward hooks record, for every module that directly owns a trainable parameter, its inputs
(detached) and its output (in the graph). One `autograd.grad` of the summed per-sample losses with
respect to those outputs gives each module's output gradient; because samples in a batch do not interact
(causal LM, per-row masks), row `b` of that gradient belongs to sample `b` alone. Each parameter's
per-sample gradient then follows in closed form:

- `nn.Linear` (also LoRA's `lora_A`/`lora_B`, which are `nn.Linear`): dW_b = sum_t g_bt a_bt^T (one einsum),
  db_b = sum_t g_bt;
- `nn.Embedding`: a per-sample scatter-add of the output gradient into the rows of the sample's tokens
  (the `padding_idx` row gets none, as in PyTorch);
- any other module (RMSNorm, LayerNorm, ...): `torch.func.vmap` of the vector-Jacobian product of that one
  module with respect to its own parameters, on the recorded input and output gradient.

A parameter used by several modules (tied embedding / output head) sums their contributions.
Parameters stream out one at a time in `model.named_parameters()` order, so a projection can consume them
without all B x P gradients existing at once. Optional Adam preconditioning uses the live optimizer's
moments (LESS, Xia et al. 2024).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from dataflex.train.signals.batching import score_in_buckets
from dataflex.train.signals.losses import (
    LossSettings,
    SampleLosses,
    head_path,
    loss_settings,
    model_losses,
    unwrap,
)
from dataflex.train.signals.projection import RandomProjector
from dataflex.train.signals.zero3 import (
    full_adam_state,
    full_numel,
    full_shape,
    functional_forward,
    gathered,
    param_groups_by_param,
    unwrap_optimizer,
)
from dataflex.utils.modes import eval_mode

if TYPE_CHECKING:  # (kronecker.py imports this module)
    from dataflex.train.signals.kronecker import KroneckerProjector

REDUCTIONS = ("mean", "sum")


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every trainable parameter, tied ones once, in `named_parameters` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def num_trainable(model: nn.Module) -> int:
    return sum(full_numel(p) for _, p in trainable_parameters(model))


@dataclass
class _Call:
    module: nn.Module
    args: tuple
    kwargs: dict
    output: torch.Tensor
    cache: dict = field(default_factory=dict)


def _detach(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


class _Recorder:
    """Forward hooks on the modules that directly own trainable parameters."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[_Call] = []
        self.owners = [
            m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))
        ]
        self._handles: list = []

    def _hook(self, module, args, kwargs, output):
        if not isinstance(output, torch.Tensor):
            raise NotImplementedError(
                f"per-sample gradients: {type(module).__name__} owns trainable parameters "
                "but returns a non-tensor output; freeze it or wrap it in a module that "
                "returns a tensor."
            )
        self.calls.append(
            _Call(module, tuple(_detach(a) for a in args), {k: _detach(v) for k, v in kwargs.items()}, output)
        )

    def __enter__(self) -> _Recorder:
        self._handles = [m.register_forward_hook(self._hook, with_kwargs=True) for m in self.owners]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()


def _linear_grad(call: _Call, attr: str, g: torch.Tensor) -> torch.Tensor:
    batch = g.shape[0]
    g = g.reshape(batch, -1, g.shape[-1]).float()
    if attr == "bias":
        return g.sum(1)
    a = call.args[0].reshape(batch, -1, call.args[0].shape[-1]).float()
    return torch.bmm(g.transpose(1, 2), a)


def _embedding_grad(call: _Call, g: torch.Tensor) -> torch.Tensor:
    module = call.module
    assert isinstance(module, nn.Embedding)  # (dispatched here by module type)
    if module.scale_grad_by_freq or module.sparse:
        raise NotImplementedError(
            "per-sample gradients of nn.Embedding(scale_grad_by_freq/sparse) are not supported"
        )
    batch, dim = g.shape[0], g.shape[-1]
    ids = call.args[0].reshape(batch, -1)
    out = torch.zeros(batch, module.num_embeddings, dim, dtype=torch.float32, device=g.device)
    out.scatter_add_(1, ids.unsqueeze(-1).expand(-1, -1, dim), g.reshape(batch, -1, dim).float())
    if module.padding_idx is not None:
        out[:, module.padding_idx] = 0.0
    return out


def _generic_grads(call: _Call, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample VJP of one module w.r.t. its own parameters (vmap over the batch)."""
    from torch.func import grad, vmap

    module = call.module
    batch = g.shape[0]
    batched = tuple(isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == batch for a in call.args)

    def vjp(p, cotangent, *args):
        full = [a.unsqueeze(0) if is_b else a for a, is_b in zip(args, batched)]
        out = functional_forward(module, p, tuple(full), call.kwargs)
        return (out.float() * cotangent.unsqueeze(0)).sum()

    in_dims = (None, 0) + tuple(0 if b else None for b in batched)
    with gathered(module.parameters(recurse=False)):  # ZeRO-3: the full weights (a collective)
        params = {n: p.detach() for n, p in module.named_parameters(recurse=False) if p.requires_grad}
        grads = vmap(grad(vjp), in_dims=in_dims)(params, g.float(), *call.args)
    return {n: t.float() for n, t in grads.items()}


def param_grad_of_call(call: _Call, attr: str, g: torch.Tensor) -> torch.Tensor:
    """(B, *shape) per-sample gradient of the module's own parameter `attr` from one recorded call, given
    the gradient `g` of that call's output."""
    if isinstance(call.module, nn.Linear):
        return _linear_grad(call, attr, g)
    if isinstance(call.module, nn.Embedding):
        return _embedding_grad(call, g)
    if "generic" not in call.cache:
        call.cache["generic"] = _generic_grads(call, g)
    return call.cache["generic"].pop(attr)


def _head_trains(model: nn.Module) -> bool:
    head = getattr(unwrap(model), "get_output_embeddings", lambda: None)()
    return head is None or any(p.requires_grad for p in head.parameters())


def _loss_settings(model: nn.Module) -> LossSettings:
    """The configured (chunked) losses when the LM head is frozen (LoRA); the plain full-logit path when the
    head trains, because its per-sample gradient needs the recorded head call on every position."""
    settings = loss_settings()
    return LossSettings("plain", settings.chunk_size) if _head_trains(model) else settings


def checkpointing_in_train_mode(model: nn.Module) -> bool:
    """HF gradient checkpointing recomputes layers in backward only in train mode."""
    return model.training and any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


@dataclass
class OutputGradients:
    """What one batched forward + one backward to the module outputs leaves: the recorded module calls,
    the gradient of the summed per-sample losses w.r.t. each call's output (row b = sample b), and, per
    trainable parameter (by id), the (call index, attribute) pairs that use it."""

    calls: list[_Call]
    grads: tuple
    uses: dict[int, list[tuple[int, str]]]
    batch_size: int
    losses: SampleLosses | None = None
    """The per-sample losses of the same forward, detached (per-step selection reads them too)."""


def output_gradients(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    reduction: str = "mean",
    weights: torch.Tensor | None = None,
    device=None,
) -> OutputGradients:
    """Runs the forward with recording hooks and one `autograd.grad` to the recorded outputs (see the
    module docstring); the per-sample loss is as in `per_sample_gradient_pieces`."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if checkpointing_in_train_mode(model):
        raise RuntimeError(
            "per-sample gradient features are computed from activations recorded by forward hooks, "
            "which gradient checkpointing would record again during its recompute; compute them "
            "in eval mode (dataflex.utils.modes.eval_mode, as every built-in selector does), where "
            "HF does not checkpoint."
        )
    device = device if device is not None else next(model.parameters()).device
    settings = _loss_settings(model)
    head_path(
        model, settings, {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}
    )  # probe unrecorded
    with torch.enable_grad(), _Recorder(model) as rec:
        losses = model_losses(model, batch, device, settings)
    per = losses.mean if reduction == "mean" else losses.token_sum
    if weights is not None:
        per = per * weights.to(per.device, per.dtype)
    outputs = [c.output for c in rec.calls]
    grads = torch.autograd.grad(per.sum(), outputs, allow_unused=True) if outputs else ()
    uses: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for ci, call in enumerate(rec.calls):
        for attr, p in call.module.named_parameters(recurse=False):
            if p.requires_grad and grads[ci] is not None:
                uses[id(p)].append((ci, attr))
    detached = SampleLosses(losses.token_sum.detach(), losses.token_count.detach())
    return OutputGradients(rec.calls, grads, uses, batch["input_ids"].shape[0], detached)


def per_sample_gradient_pieces(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    reduction: str = "mean",
    weights: torch.Tensor | None = None,
    device=None,
    params: Sequence[tuple[str, nn.Parameter]] | None = None,
    max_piece: int = 1 << 15,
) -> Iterator[tuple[str, nn.Parameter, int, torch.Tensor]]:
    """Yields (name, parameter, start, (B, n) float32 piece): consecutive pieces of every trainable
    parameter's flattened per-sample gradient, parameters in order, `start` = the piece's offset inside
    the flattened parameter. A linear layer's weight comes in row blocks of about `max_piece` entries, so
    a consumer (projection) reads each block while it is still in cache instead of a B x out x in tensor.

    The per-sample loss is the token mean (`reduction="mean"`, as `model(...).loss` of a batch of one) or
    the token sum (`"sum"`, a sequence's negative log-likelihood), times `weights[b]` if given. The model
    is used as it is (call `model.eval()` first to switch dropout off)."""
    device = device if device is not None else next(model.parameters()).device
    params = list(params) if params is not None else trainable_parameters(model)
    out = output_gradients(model, batch, reduction=reduction, weights=weights, device=device)
    calls, grads, uses, batch_size = out.calls, out.grads, out.uses, out.batch_size
    for name, p in params:
        found = uses.get(id(p), [])
        if len(found) == 1 and found[0][1] == "weight" and isinstance(calls[found[0][0]].module, nn.Linear):
            call, g = calls[found[0][0]], grads[found[0][0]]
            g = g.reshape(batch_size, -1, g.shape[-1]).float()
            a = call.args[0].reshape(batch_size, -1, call.args[0].shape[-1]).float()
            rows = max(1, max_piece // a.shape[-1])
            for r0 in range(0, g.shape[-1], rows):
                piece = torch.bmm(g[:, :, r0 : r0 + rows].transpose(1, 2), a)
                yield name, p, r0 * a.shape[-1], piece.reshape(batch_size, -1)
            continue
        total = None
        for ci, attr in found:
            piece = param_grad_of_call(calls[ci], attr, grads[ci])
            total = piece if total is None else total + piece
        if total is None:
            total = torch.zeros(batch_size, *full_shape(p), device=device)
        yield name, p, 0, total.reshape(batch_size, -1)


def per_sample_gradients(
    model: nn.Module, batch: dict[str, torch.Tensor], **kw
) -> Iterator[tuple[str, nn.Parameter, torch.Tensor]]:
    """Yields (name, parameter, (B, *shape) float32 gradient) for every trainable parameter, in order
    (same arguments as `per_sample_gradient_pieces`)."""
    current, pieces = None, []
    for name, p, _, piece in per_sample_gradient_pieces(model, batch, **kw):
        if current is not None and current[1] is not p:
            yield current[0], current[1], torch.cat(pieces, dim=1).reshape(-1, *full_shape(current[1]))
            pieces = []
        current = (name, p)
        pieces.append(piece)
    if current is not None:
        yield current[0], current[1], torch.cat(pieces, dim=1).reshape(-1, *full_shape(current[1]))


class AdamPreconditioner:
    """Turns a gradient g into Adam's next update direction given the optimizer's moments (LESS, Eq. for
    Γ): m' = β1 m + (1-β1) g, v' = β2 v + (1-β2) g², with the bias correction of step t+1, then
    m̂ / (sqrt(v̂) + ε). β1, β2, ε come from the parameter's own param group of the live optimizer.

    `variant="code"` is the official LESS code exactly (less/data_selection/collect_grad_reps.py,
    obtain_gradients_with_adam): fixed β1=0.9, β2=0.999, ε=1e-8 *inside* the square root, no bias correction:
    m' / sqrt(v' + ε). `variant="paper"` (default) is the formula above; `bias_correction=False` drops only
    the bias correction from it (neither the paper nor the code: kept for compatibility).
    With no moments yet (before the first optimizer step) both reduce to ~sign(g) elementwise.
    It keeps the moments of the parameter it read last (pieces of one parameter arrive in a row), so build
    one per scoring pass, not across optimizer steps."""

    VARIANTS = ("paper", "code")
    CODE_BETAS, CODE_EPS = (0.9, 0.999), 1e-8

    def __init__(self, optimizer, *, bias_correction: bool = True, variant: str = "paper") -> None:
        if variant not in self.VARIANTS:
            raise ValueError(f"AdamPreconditioner variant must be one of {self.VARIANTS}, got {variant!r}.")
        self.optimizer = unwrap_optimizer(optimizer)  # accelerate's AcceleratedOptimizer -> the optimizer
        self.bias_correction, self.variant = bias_correction, variant
        self._group = param_groups_by_param(self.optimizer)
        self._state: tuple = (None, None, None, 0.0)  # (param, exp_avg, exp_avg_sq, step) of the last param

    def __call__(self, param: nn.Parameter, g: torch.Tensor, start: int = 0) -> torch.Tensor:
        """`g`: (B, *param.shape) per-sample gradients, or a (B, n) piece starting at flat offset `start`."""
        group = self._group.get(id(param))
        if group is None:
            raise ValueError(
                "AdamPreconditioner: a trainable parameter is not in the optimizer; build the "
                "preconditioner from the optimizer that trains this model."
            )
        beta1, beta2 = group["betas"] if self.variant == "paper" else self.CODE_BETAS
        eps = group["eps"] if self.variant == "paper" else self.CODE_EPS
        if self._state[0] is not param:  # once per parameter, not per piece (a collective under DeepSpeed)
            self._state = (param, *full_adam_state(self.optimizer, param))
        _, m, v, step = self._state
        n = g[0].numel()

        def moment(t):
            if t is None:
                return torch.zeros_like(g[0])
            return t.reshape(-1)[start : start + n].to(g.device, torch.float32).reshape(g.shape[1:])

        m, v = moment(m), moment(v)
        if self.variant == "code":  # the official LESS code: m' / sqrt(v' + eps), no bias correction
            m_new = torch.add(m * beta1, g, alpha=1 - beta1)
            return m_new.div_(g.square().mul_(1 - beta2).add_(v * beta2).add_(eps).sqrt_())
        c1 = 1 - beta1 ** (step + 1) if self.bias_correction else 1.0
        c2 = 1 - beta2 ** (step + 1) if self.bias_correction else 1.0
        # m_hat / (sqrt(v_hat) + eps) with m_hat = (b1 m + (1-b1) g) / c1, v_hat = (b2 v + (1-b2) g^2) / c2,
        # computed in place on two (B, n) buffers: this elementwise pass dominated LESS scoring on CPU.
        denominator = g.square().mul_((1 - beta2) / c2).add_(v * (beta2 / c2)).sqrt_().add_(eps)
        return torch.add(m * (beta1 / c1), g, alpha=(1 - beta1) / c1).div_(denominator)


def optimizer_has_moments(optimizer) -> bool:
    """Whether the optimizer holds Adam moments yet (False before its first step)."""
    opt = unwrap_optimizer(optimizer)
    return any("exp_avg_sq" in state or "step" in state for state in opt.state.values())


def gradient_features(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    projector: RandomProjector | KroneckerProjector | None = None,
    preconditioner=None,
    reduction: str = "mean",
    weights: torch.Tensor | None = None,
    device=None,
) -> torch.Tensor:
    """(B, proj_dim) projected — or (B, P) full, without a projector — per-sample gradient features of a
    collated batch, optionally Adam-preconditioned. Not normalised. A `KroneckerProjector` projects without
    forming the per-sample gradients (signals/kronecker.py)."""
    if projector is not None and not isinstance(projector, RandomProjector):  # a KroneckerProjector
        if preconditioner is not None:
            raise ValueError(
                "Kronecker-projected features cannot be Adam-preconditioned (that needs each "
                "per-sample gradient squared); use a RandomProjector (proj_type=sparse) for them."
            )
        return projector.features(model, batch, reduction=reduction, weights=weights, device=device)
    device = device if device is not None else next(model.parameters()).device
    batch_size = batch["input_ids"].shape[0]
    out = torch.zeros(batch_size, projector.proj_dim, device=device) if projector is not None else None
    pieces: list[torch.Tensor] = []
    offset, base, last = 0, 0, None
    for _, p, start, piece in per_sample_gradient_pieces(
        model, batch, reduction=reduction, weights=weights, device=device
    ):
        if p is not last:
            base, last = offset, p
        if preconditioner is not None:
            piece = preconditioner(p, piece, start)
        if projector is not None and out is not None:
            projector.project_block(out, piece, base + start, consume=True)
        else:
            pieces.append(piece)
        offset = base + start + piece.shape[1]
    return out if out is not None else torch.cat(pieces, dim=1)


def collect_gradient_features(
    model: nn.Module,
    data,
    indices: Sequence[int] | np.ndarray,
    *,
    batch_size: int,
    pad_token_id: int,
    projector: RandomProjector | KroneckerProjector | None = None,
    preconditioner=None,
    normalize: bool = True,
    device=None,
) -> torch.Tensor:
    """(len(indices), proj_dim) features of `data[i]` (training items), in order, L2-normalised unless told
    otherwise. Runs the model in eval mode (no dropout) and restores its mode. Batches of `batch_size` rows of
    similar length (sorted by length; the features come back in the order of `indices`): per-sample gradient
    work grows with the padded width, so padding to the batch's longest row is what bucketing saves."""

    def fn(batch):
        return gradient_features(
            model, batch, projector=projector, preconditioner=preconditioner, device=device
        )

    with eval_mode(model):
        feats = score_in_buckets(
            fn,
            data,
            indices,
            pad_token_id=pad_token_id,
            max_tokens=1 << 62,
            max_rows=batch_size,
            desc="gradient features",
        )
    if not len(feats):
        feats = torch.zeros(0, projector.proj_dim if projector is not None else num_trainable(model))
    return torch.nn.functional.normalize(feats, dim=-1) if normalize and len(feats) else feats
