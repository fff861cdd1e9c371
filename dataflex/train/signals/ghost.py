"""Ghost inner products: per-sample gradient dot products (with each other and with a validation gradient)
from the layer inputs and output gradients of ONE forward and ONE backward, without forming per-sample
gradients (GREATS, Wang et al. 2024; "ghost clipping", Li et al. 2022).

A linear layer's per-sample weight gradient is dW_i = sum_t g_it a_it^T (g: output gradient, a: input), so

    <dW_i, dW_j> = sum_t sum_s (a_it . a_js) (g_it . g_js),

two token-by-token Gram matrices multiplied elementwise and summed per sample block: O(T_i T_j (in + out))
instead of O(T (in x out)) per sample plus an (in x out) dot product. An embedding is the same with the
input replaced by the one-hot of the token id (a_it . a_js = [x_it == x_js], or a gather of the other
side's left factor when the weight is tied to the LM head). Where materialising is cheaper (short
sequences, thin LoRA matrices) `method="auto"` forms dW_i instead for that layer; the result is the same
number either way. Vectors (biases, norm weights) and modules we know nothing about are materialised per
sample (`gradients.param_grad_of_call`): they are small or rare.

The forward/backward is `gradients.output_gradients` (forward hooks on every module owning a trainable
parameter, one `autograd.grad` of the summed per-sample losses to the recorded outputs); a parameter used by
several calls (tied embedding/head) sums all cross terms. Everything is float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from dataflex.train.signals.gradients import (
    OutputGradients,
    output_gradients,
    param_grad_of_call,
    trainable_parameters,
)

METHODS = ("auto", "ghost", "materialize")
MAX_KERNEL = 1 << 24
"""Entries of one token-by-token kernel chunk (64 MiB in float32): rows are processed in blocks below it."""


@dataclass
class _Term:
    """One use of a parameter by one recorded call: per-sample gradient sum_t left_t right_t^T (factored,
    `left` dense (B, T, d_left) or `left_ids` (B, T) one-hot rows of an embedding of `d_left` rows), or a
    materialised (B, n) `flat` gradient."""

    shape: tuple[int, ...]
    left: torch.Tensor | None = None
    left_ids: torch.Tensor | None = None
    right: torch.Tensor | None = None
    flat: torch.Tensor | None = None

    @property
    def factored(self) -> bool:
        return self.flat is None

    def rows(self, index: torch.Tensor) -> _Term:
        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.index_select(0, index.to(x.device))

        return _Term(self.shape, pick(self.left), pick(self.left_ids), pick(self.right), pick(self.flat))

    def weighted_sum(self, weights: torch.Tensor) -> torch.Tensor:
        """(prod(shape),) sum_i weights[i] dW_i over this term's rows: one matmul over all their tokens (the
        weight-gradient half of a backward over these rows alone), never a per-sample gradient."""
        right = self.right
        if self.flat is not None:
            return weights.to(self.flat) @ self.flat
        assert right is not None
        w = weights.to(right).reshape(-1, 1, 1)
        if self.left is not None:
            return (
                (self.left * w).reshape(-1, self.left.shape[-1]).T @ right.reshape(-1, right.shape[-1])
            ).reshape(-1)
        assert self.left_ids is not None
        out = right.new_zeros(self.shape[0], right.shape[-1])
        out.index_add_(0, self.left_ids.reshape(-1), (right * w).reshape(-1, right.shape[-1]))
        return out.reshape(-1)

    def materialize(self) -> torch.Tensor:
        """(B, prod(shape)) per-sample gradient."""
        if self.flat is not None:
            return self.flat
        right = self.right
        assert right is not None
        if self.left is not None:
            return torch.bmm(self.left.transpose(1, 2), right).reshape(right.shape[0], -1)
        assert self.left_ids is not None
        out = right.new_zeros(right.shape[0], self.shape[0], right.shape[-1])
        out.scatter_add_(1, self.left_ids.unsqueeze(-1).expand(-1, -1, right.shape[-1]), right)
        return out.reshape(right.shape[0], -1)


def _terms_of_call(call, attr: str, g: torch.Tensor, batch: int) -> _Term:
    module = call.module
    g = g.reshape(batch, -1, g.shape[-1]).float()
    if isinstance(module, nn.Linear) and attr == "weight":
        a = call.args[0].reshape(batch, -1, call.args[0].shape[-1]).float()
        return _Term((g.shape[-1], a.shape[-1]), left=g, right=a)
    if isinstance(module, nn.Linear) and attr == "bias":
        return _Term((g.shape[-1],), flat=g.sum(1))
    if isinstance(module, nn.Embedding) and not (module.scale_grad_by_freq or module.sparse):
        ids = call.args[0].reshape(batch, -1)
        if module.padding_idx is not None:  # PyTorch gives the padding row no gradient
            g = g * (ids != module.padding_idx).unsqueeze(-1)
        return _Term((module.num_embeddings, g.shape[-1]), left_ids=ids, right=g)
    flat = param_grad_of_call(call, attr, g).reshape(batch, -1).float()
    return _Term(tuple(flat.shape[1:]), flat=flat)


def _left_kernel(u: _Term, v: _Term) -> torch.Tensor:
    """(N_u, N_v) inner products of the left factors of every token pair (tokens flattened)."""
    if u.left is not None and v.left is not None:
        return u.left.reshape(-1, u.left.shape[-1]) @ v.left.reshape(-1, v.left.shape[-1]).T
    if u.left is not None:  # dense . one-hot = a gather of the dense side
        assert v.left_ids is not None
        return u.left.reshape(-1, u.left.shape[-1]).index_select(1, v.left_ids.reshape(-1))
    if v.left is not None:
        return _left_kernel(v, u).T
    assert u.left_ids is not None and v.left_ids is not None
    return (u.left_ids.reshape(-1, 1) == v.left_ids.reshape(1, -1)).float()


def _ghost(u: _Term, v: _Term) -> torch.Tensor:
    """(B_u, B_v) sum over token pairs of (left . left)(right . right), in row blocks under MAX_KERNEL."""
    assert u.right is not None and v.right is not None
    (bu, tu), (bv, tv) = u.right.shape[:2], v.right.shape[:2]
    rv = v.right.reshape(-1, v.right.shape[-1])
    step = max(1, MAX_KERNEL // max(1, tu * bv * tv))
    out = u.right.new_empty(bu, bv)
    for r0 in range(0, bu, step):
        part = u.rows(torch.arange(r0, min(bu, r0 + step)))
        assert part.right is not None
        kernel = _left_kernel(part, v) * (part.right.reshape(-1, part.right.shape[-1]) @ rv.T)
        out[r0 : r0 + step] = kernel.reshape(-1, tu, bv, tv).sum(dim=(1, 3))
    return out


def _costs(u: _Term, v: _Term) -> tuple[float, float]:
    """(ghost, materialise) multiply-adds of one term pair, for `method="auto"`."""
    assert u.right is not None and v.right is not None
    (bu, tu), (bv, tv) = u.right.shape[:2], v.right.shape[:2]
    d_left, d_right = u.shape[0], u.shape[1]
    ghost_left = d_left if (u.left is not None and v.left is not None) else 1
    ghost = bu * tu * bv * tv * (ghost_left + d_right)
    size = d_left * d_right
    materialise = (bu * tu + bv * tv) * size + bu * bv * size
    return float(ghost), float(materialise)


def _pair(
    u: _Term,
    rows: torch.Tensor,
    v: _Term,
    cols: torch.Tensor,
    method: str,
    materialised: dict[int, torch.Tensor],
    shared: bool,
) -> torch.Tensor:
    """(len(rows), len(cols)) inner products of term u's rows with term v's cols. Materialised per-sample
    gradients are kept in `materialised` (by term) for the other pairs of the same call; with `shared` (both
    sides from one batch) each term is materialised once for all its rows and indexed both ways."""

    def full(t: _Term, index: torch.Tensor) -> torch.Tensor:
        if shared:
            if id(t) not in materialised:
                materialised[id(t)] = t.materialize()
            return materialised[id(t)].index_select(0, index)
        return t.rows(index).materialize()

    ur, vc = u.rows(rows), v.rows(cols)
    if method == "auto" and ur.factored and vc.factored and ur.shape == vc.shape:
        ghost, materialise = _costs(ur, vc)
        method = "ghost" if ghost <= materialise else "materialize"
    if method == "ghost" and ur.factored and vc.factored and ur.shape == vc.shape:
        return _ghost(ur, vc)
    return full(u, rows) @ full(v, cols).T


class GhostGradients:
    """The factored per-sample gradients of one batch, per trainable parameter (in `named_parameters` order):
    what one forward + one backward to the module outputs leaves, kept until the dot products are taken."""

    def __init__(self, out: OutputGradients, params: Sequence[tuple[str, nn.Parameter]]) -> None:
        self.batch_size = out.batch_size
        self.losses = out.losses
        """The per-sample losses of the same forward (SampleLosses, detached), for loss-based rules."""
        self.terms: list[tuple[str, list[_Term]]] = []
        self.params = dict(params)
        """name -> the parameter itself (`batch_gradient` writes to it)."""
        for name, p in params:
            uses = out.uses.get(id(p), [])
            terms = [_terms_of_call(out.calls[ci], attr, out.grads[ci], out.batch_size) for ci, attr in uses]
            if terms:
                self.terms.append((name, terms))

    def dots(
        self,
        rows: Sequence[int] | torch.Tensor | None = None,
        cols: Sequence[int] | torch.Tensor | None = None,
        *,
        other: GhostGradients | None = None,
        method: str = "auto",
    ) -> torch.Tensor:
        """(len(rows), len(cols)) float32 inner products <grad_i, grad_j> of the whole trainable parameter
        vector, i over `rows` of this batch, j over `cols` of `other` (default: this batch); None: all."""
        if method not in METHODS:
            raise ValueError(f"ghost dot products: method must be one of {METHODS}, got {method!r}")
        other = other if other is not None else self
        if len(self.terms) != len(other.terms) or any(
            a != b for (a, _), (b, _) in zip(self.terms, other.terms)
        ):
            raise ValueError("ghost dot products: the two batches were recorded on different parameters")
        r = torch.arange(self.batch_size) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        c = torch.arange(other.batch_size) if cols is None else torch.as_tensor(cols, dtype=torch.long)
        total: torch.Tensor | None = None
        for (_, mine), (_, theirs) in zip(self.terms, other.terms):
            materialised: dict[int, torch.Tensor] = {}
            for u in mine:
                for v in theirs:
                    block = _pair(u, r, v, c, method, materialised, shared=other is self)
                    total = block if total is None else total + block
        return total if total is not None else torch.zeros(len(r), len(c))

    def batch_gradient(
        self, rows: Sequence[int] | torch.Tensor, weights: torch.Tensor
    ) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """(parameter, gradient) of sum_k weights[k] * loss_{rows[k]} for every recorded trainable parameter:
        what a second forward + backward of that weighted loss over those rows alone would leave in `.grad`,
        assembled from the factors this pass already holds (a linear layer: sum_k w_k g_k^T a_k over the
        rows' tokens; an embedding: their output gradients added into their tokens' rows; a tied weight:
        all its uses; vectors and other modules: their materialised per-sample gradients). Exact up to
        float32 summation order, provided the forward was the one training would run (same weights,
        no dropout, no autocast): the per-step trainer checks that before it uses this."""
        index = torch.as_tensor(rows, dtype=torch.long)
        weights = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        if len(index) != len(weights):
            raise ValueError(f"batch_gradient: {len(index)} rows but {len(weights)} weights")
        out = []
        for name, terms in self.terms:
            param = self.params[name]
            total = sum(t.rows(index).weighted_sum(weights.to(index.device)) for t in terms)
            assert isinstance(total, torch.Tensor)
            out.append((param, total.reshape(param.shape)))
        return out

    def squared_norms(self, *, method: str = "auto") -> torch.Tensor:
        """(B,) ||grad_i||^2, the Gram diagonal (GradNorm's score), without the off-diagonal blocks:
        per sample sum_{t,s} (l_t . l_s)(r_t . r_s) by batched matmuls, or the materialised gradient's
        squared norm, whichever `method` (auto: the cheaper) says."""
        if method not in METHODS:
            raise ValueError(f"ghost dot products: method must be one of {METHODS}, got {method!r}")
        total = torch.zeros(self.batch_size)
        for _, terms in self.terms:
            flat: dict[int, torch.Tensor] = {}
            for u in terms:
                for v in terms:
                    total = total + _diagonal(u, v, method, flat).to(total.device)
        return total


def _diagonal(u: _Term, v: _Term, method: str, flat: dict[int, torch.Tensor]) -> torch.Tensor:
    """(B,) <dW^u_i, dW^v_i> of two uses of one parameter by the same samples."""
    use_ghost = u.factored and v.factored and u.shape == v.shape and method != "materialize"
    if use_ghost and method == "auto":
        assert u.right is not None
        tokens, (d_left, d_right) = u.right.shape[1], u.shape[:2]
        use_ghost = tokens * tokens * (d_left + d_right) <= tokens * d_left * d_right
    if use_ghost:
        assert u.right is not None and v.right is not None
        right = torch.bmm(u.right, v.right.transpose(1, 2))  # (B, T, T)
        if u.left is not None and v.left is not None:
            left = torch.bmm(u.left, v.left.transpose(1, 2))
        elif u.left is not None:
            assert v.left_ids is not None
            left = torch.gather(u.left, 2, v.left_ids.unsqueeze(1).expand(-1, u.left.shape[1], -1))
        elif v.left is not None:
            assert u.left_ids is not None
            left = torch.gather(v.left, 2, u.left_ids.unsqueeze(1).expand(-1, v.left.shape[1], -1))
            left = left.transpose(1, 2)
        else:
            assert u.left_ids is not None and v.left_ids is not None
            left = (u.left_ids.unsqueeze(2) == v.left_ids.unsqueeze(1)).float()
        return (left * right).sum(dim=(1, 2))
    for t in (u, v):
        if id(t) not in flat:
            flat[id(t)] = t.materialize()
    return (flat[id(u)] * flat[id(v)]).sum(1)


def ghost_gradients(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    reduction: str = "mean",
    weights: torch.Tensor | None = None,
    device=None,
) -> GhostGradients:
    """One recorded forward and one backward of `batch` (per-sample loss: token mean, or the token sum with
    `reduction="sum"`, times `weights`); the model is used as it is (eval mode for no dropout)."""
    out = output_gradients(model, batch, reduction=reduction, weights=weights, device=device)
    return GhostGradients(out, trainable_parameters(model))
