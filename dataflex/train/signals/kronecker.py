"""Kronecker-factored projection of per-sample gradients, computed without ever forming them (LoGra,
Choe et al. 2024, "What is Your Data Worth to GPT?").

A linear layer's per-sample weight gradient is dW_b = sum_t g_bt a_bt^T (output gradient times input).
Projected with P = R_out ⊗ R_in (R_out: k_out x out, R_in: k_in x in) it is

    R_out dW_b R_in^T = sum_t (R_out g_bt)(R_in a_bt)^T,

two thin matmuls per token and one (k_out x T)(T x k_in) product per sample, instead of the out x in
gradient of every sample plus a projection of it. The factors are Gaussian scaled by 1/sqrt(k), so
E[P^T P] = I and inner products (hence cosines) are preserved in expectation, like the dense
projections; a side no longer than k is kept exactly (identity factor). Embeddings use the one-hot
input (the rows of R_out at the sample's token ids); vectors (norm weights, biases) are kept exactly up
to k^2 entries and Gaussian-projected to k^2 beyond that.

Features are linear in the per-sample gradient, so this cannot be combined with Adam preconditioning
(which squares the gradient elementwise): use it for SGD features (`component.gradient_type=sgd`, the
target side of LESS, NICE).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from dataflex.train.signals.gradients import output_gradients, param_grad_of_call, trainable_parameters
from dataflex.train.signals.zero3 import full_numel, full_shape


def _factor(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor | None:
    """A rows x cols Gaussian factor scaled by 1/sqrt(rows), or None (identity) when rows >= cols."""
    if rows >= cols:
        return None
    return torch.randn(rows, cols, generator=generator).mul_(rows**-0.5)


def _apply(factor: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """x (..., n) -> (..., k): x @ factor^T, or x itself for the identity."""
    return x if factor is None else x @ factor.T


def _project_matrix(
    full: torch.Tensor, r_out: torch.Tensor | None, r_in: torch.Tensor | None
) -> torch.Tensor:
    """(B, out, in) per-sample matrices -> (B, k_out, k_in) = R_out G R_in^T."""
    return _apply(r_in, _apply(r_out, full.transpose(1, 2)).transpose(1, 2))


class KroneckerProjector:
    """Per trainable parameter (in `named_parameters` order) one block of the feature vector: k_out x k_in
    for a matrix, up to k^2 for anything else, with k = floor(sqrt(proj_dim / number of matrices)). So
    `proj_dim` is the budget of the matrices; the actual feature size is `self.proj_dim`."""

    kind = "kronecker"

    def __init__(self, model: nn.Module, proj_dim: int, *, seed: int = 0) -> None:
        if proj_dim <= 0:
            raise ValueError(f"KroneckerProjector needs proj_dim > 0, got {proj_dim}.")
        self.params = trainable_parameters(model)
        shapes = {id(p): tuple(full_shape(p)) for _, p in self.params}  # ZeRO-3: the real shapes
        self._is_matrix = {i: len(shape) == 2 for i, shape in shapes.items()}
        matrices = sum(self._is_matrix.values())
        self.factor_dim = k = max(1, math.isqrt(proj_dim // max(matrices, 1)))
        self.factors: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self.offsets: dict[int, tuple[int, int]] = {}
        offset = 0
        for index, (_, p) in enumerate(self.params):
            state = np.random.SeedSequence([int(seed), index]).generate_state(1, dtype=np.uint64)[0]
            gen = torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
            if self._is_matrix[id(p)]:
                out_dim, in_dim = shapes[id(p)]
                pair = (_factor(k, out_dim, gen), _factor(k, in_dim, gen))
                size = min(k, out_dim) * min(k, in_dim)
            else:
                pair = (None, _factor(k * k, full_numel(p), gen))
                size = min(k * k, full_numel(p))
            self.factors[id(p)] = pair
            self.offsets[id(p)] = (offset, size)
            offset += size
        self.proj_dim = offset
        self._device = torch.device("cpu")

    def _to(self, device: torch.device) -> None:
        """Keeps the factors on the device of use (moved once, not at every call)."""
        if device != self._device:
            self.factors = {
                i: (None if a is None else a.to(device), None if b is None else b.to(device))
                for i, (a, b) in self.factors.items()
            }
            self._device = device

    def _matrix_block(self, p: nn.Parameter, call, attr: str, g: torch.Tensor) -> torch.Tensor:
        """(B, k_out, k_in) projected per-sample gradient of matrix `p` from one module call."""
        r_out, r_in = self.factors[id(p)]
        module, raw, batch = call.module, g, g.shape[0]
        g = g.reshape(batch, -1, g.shape[-1]).float()
        if isinstance(module, nn.Linear) and attr == "weight":
            a = call.args[0].reshape(batch, -1, call.args[0].shape[-1]).float()
            out_dim, in_dim = g.shape[-1], a.shape[-1]
            per_token_factored = (r_out.shape[0] * out_dim if r_out is not None else 0) + (
                r_in.shape[0] * in_dim if r_in is not None else 0
            )
            if per_token_factored < out_dim * in_dim:
                return torch.bmm(_apply(r_out, g).transpose(1, 2), _apply(r_in, a))
            # thin matrices (LoRA's A and B): forming the small per-sample gradient first is cheaper
            return _project_matrix(torch.bmm(g.transpose(1, 2), a), r_out, r_in)
        if isinstance(module, nn.Embedding) and not (module.scale_grad_by_freq or module.sparse):
            ids = call.args[0].reshape(batch, -1)
            rows = (
                torch.nn.functional.one_hot(ids, module.num_embeddings).float()
                if r_out is None
                else r_out.T[ids]
            )  # (B, T, k_out): R_out times the one-hot of each token
            if module.padding_idx is not None:
                rows = rows * (ids != module.padding_idx).unsqueeze(-1)
            return torch.bmm(rows.transpose(1, 2), _apply(r_in, g))
        return _project_matrix(param_grad_of_call(call, attr, raw), r_out, r_in)  # any other module

    def features(
        self,
        model: nn.Module,
        batch: dict[str, torch.Tensor],
        *,
        reduction: str = "mean",
        weights: torch.Tensor | None = None,
        device=None,
    ) -> torch.Tensor:
        """(B, proj_dim) projected per-sample gradient features of a collated batch (not normalised)."""
        out = output_gradients(model, batch, reduction=reduction, weights=weights, device=device)
        device = torch.device(device) if device is not None else next(model.parameters()).device
        self._to(device)
        result = torch.zeros(out.batch_size, self.proj_dim, device=device)
        for _, p in self.params:
            offset, size = self.offsets[id(p)]
            for ci, attr in out.uses.get(id(p), []):
                call, g = out.calls[ci], out.grads[ci]
                if self._is_matrix[id(p)]:
                    block = self._matrix_block(p, call, attr, g)
                else:
                    block = _apply(
                        self.factors[id(p)][1], param_grad_of_call(call, attr, g).reshape(out.batch_size, -1)
                    )
                result[:, offset : offset + size] += block.reshape(out.batch_size, -1)
        return result
