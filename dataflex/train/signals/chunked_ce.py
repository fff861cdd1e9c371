"""Per-token cross entropy through the LM head in chunks of tokens, never holding the (tokens x vocab) logits.

`ChunkedLinearCrossEntropy` computes, for hidden states h (N, H) and the head's weight W (V, H) (+ bias),
loss_i = logsumexp(z_i) - z_i[y_i] with z_i = cap * tanh(s * (h_i W^T + b) / cap) (cap: Gemma-2's final logit
soft-capping, s: a logit scale), `chunk_size` rows at a time. Forward keeps only h, W and the per-token
logsumexp; backward recomputes each chunk's logits (one extra matmul) and folds the *per-token* upstream
gradient into the logits gradient before it is summed into dW, so any per-sample or per-token weighting of
the returned losses back-propagates exactly (a fused kernel that scales dW after the sum cannot be right:
the original DataFlex's issue #49 class of bug). A frozen head (LoRA) needs only dL/dh, linear in each
token's upstream gradient: it is computed per chunk in forward and only scaled in backward (no recompute).
Peak extra memory: about 3 x chunk_size x V floats.
"""

from __future__ import annotations

import torch


def _chunk_logits(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float, softcap: float | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fp32 logits of one chunk (matmul in the model's dtype, like the plain head); tanh(z/cap) if capped."""
    z = h @ weight.t()
    if bias is not None:
        z = z + bias
    z = z.float()
    if scale != 1.0:
        z = z * scale
    if softcap is None:
        return z, None
    t = torch.tanh(z / softcap)
    return t * softcap, t


def _logit_grad(
    z: torch.Tensor,
    t: torch.Tensor | None,
    lse: torch.Tensor,
    labels: torch.Tensor,
    upstream: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """d loss_i / d (pre-scale, pre-cap logits) of one chunk, in place of `z` (fp32): softmax - one-hot,
    times each row's `upstream` gradient when given, through the soft-cap and the scale."""
    g = torch.exp_(z.sub_(lse[:, None]))  # softmax, in place of z
    rows = torch.arange(g.shape[0], device=g.device)
    g[rows, labels] -= 1.0
    if upstream is not None:
        g.mul_(upstream[:, None])
    if t is not None:
        g.mul_(1.0 - t * t)
    if scale != 1.0:
        g.mul_(scale)
    return g


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """(N,) float32 per-token losses; labels equal to `ignore_index` get 0 and no gradient."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        chunk_size: int,
        scale: float,
        softcap: float | None,
        ignore_index: int,
    ) -> torch.Tensor:
        n = hidden.shape[0]
        losses = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        lse = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        valid = labels != ignore_index
        safe = labels.masked_fill(~valid, 0)
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        # A frozen head (LoRA, frozen lm_head) needs only dL/dh, which is linear in each token's upstream
        # gradient: dL/dh_i = u_i * (g_i @ W). g_i @ W is computed here, where the logits already exist, so
        # backward only scales rows (no second pass over the logits). A trainable head's dW = sum_i u_i
        # g_i^T h_i needs every u_i inside the sum, so it is recomputed in backward.
        fused = need_h and not need_w and not need_b
        unit_grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if fused else None
        for s in range(0, n, chunk_size):
            z, t = _chunk_logits(hidden[s : s + chunk_size], weight, bias, scale, softcap)
            chunk_lse = torch.logsumexp(z, dim=-1)
            target = z.gather(1, safe[s : s + chunk_size, None]).squeeze(1)
            lse[s : s + chunk_size] = chunk_lse
            losses[s : s + chunk_size] = (chunk_lse - target) * valid[s : s + chunk_size]
            if unit_grad_h is not None:
                g = _logit_grad(z, t, chunk_lse, safe[s : s + chunk_size], None, scale)
                unit_grad_h[s : s + chunk_size] = g.to(hidden.dtype) @ weight
                del g
            del z, t
        if unit_grad_h is not None:
            ctx.save_for_backward(unit_grad_h, valid)
        else:
            ctx.save_for_backward(hidden, weight, bias, safe, valid, lse)
        ctx.fused, ctx.hidden_dtype = unit_grad_h is not None, hidden.dtype
        ctx.chunk_size, ctx.scale, ctx.softcap = chunk_size, scale, softcap
        return losses

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor):
        if ctx.fused:
            unit_grad_h, valid = ctx.saved_tensors
            grad_h = (unit_grad_h * (grad_losses.float() * valid)[:, None]).to(ctx.hidden_dtype)
            return grad_h, None, None, None, None, None, None, None
        hidden, weight, bias, safe, valid, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None
        acc = torch.promote_types(weight.dtype, torch.float32)  # bf16/fp16 heads accumulate dW in float32
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = (
            torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b and bias is not None else None
        )
        upstream = grad_losses.float() * valid
        chunk = ctx.chunk_size
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s : s + chunk]
            z, t = _chunk_logits(h, weight, bias, ctx.scale, ctx.softcap)
            # per-token weight, before any sum over tokens
            g = _logit_grad(z, t, lse[s : s + chunk], safe[s : s + chunk], upstream[s : s + chunk], ctx.scale)
            g_low = g.to(hidden.dtype)
            if grad_h is not None:
                grad_h[s : s + chunk] = g_low @ weight
            if grad_w is not None:
                grad_w.add_((g_low.t() @ h).to(acc))
            if grad_b is not None:
                grad_b.add_(g.sum(0).to(acc))
            del z, g, g_low, t
        return (
            grad_h,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            grad_b.to(bias.dtype) if grad_b is not None else None,
            None,
            None,
            None,
            None,
            None,
        )


def chunked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    chunk_size: int = 1024,
    scale: float = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """(N,) per-token losses of `hidden` (N, H) through the linear head `weight` (V, H) (+ `bias`)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}.")
    return ChunkedLinearCrossEntropy.apply(
        hidden, weight, bias, labels, int(chunk_size), float(scale), softcap, int(ignore_index)
    )


def checkpointed_module_cross_entropy(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    labels: torch.Tensor,
    *,
    chunk_size: int = 1024,
    scale: float = 1.0,
    softcap: float | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """The same losses for a head that is not a plain `nn.Linear` (e.g. a LoRA-wrapped `lm_head`): the head
    module runs per chunk under `torch.utils.checkpoint` (non-reentrant), so each chunk's logits are
    recomputed in backward instead of kept."""
    from torch.utils.checkpoint import checkpoint

    def chunk_loss(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = head(h).float() * scale
        if softcap is not None:
            z = torch.tanh(z / softcap) * softcap
        return torch.nn.functional.cross_entropy(z, y, ignore_index=ignore_index, reduction="none")

    out = []
    for s in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[s : s + chunk_size], labels[s : s + chunk_size]
        out.append(
            checkpoint(chunk_loss, h, y, use_reentrant=False) if torch.is_grad_enabled() else chunk_loss(h, y)
        )
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)
