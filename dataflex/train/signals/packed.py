"""Per-sample losses from a packed forward (`data.packing=true`, layout in `dataflex.data.packing`).

The model runs on the packed rows; the per-token losses are mapped back to the per-sample layout, so the
returned `SampleLosses` is that of the unpacked micro-batch: same samples, same order, same shapes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dataflex.data.packing import unpack_token_values
from dataflex.data.processor import IGNORE_INDEX
from dataflex.train.signals.losses import SampleLosses, model_losses


def packed_logits(model: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Logits of packed rows: restarting position ids and no 2D mask make transformers build a block-diagonal
    causal mask; `use_cache=False` is required, else it builds a KV cache and skips that detection."""
    return model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits


def packed_sample_losses(model: nn.Module, batch: dict, device) -> SampleLosses:
    """Per-sample losses of a micro-batch collated by `collate_packed`, in its per-sample layout."""
    packed = batch["packed"]
    rows = model_losses(
        model,
        {"input_ids": packed["input_ids"], "labels": packed["labels"]},
        device,
        position_ids=packed["position_ids"].to(device),
        use_cache=False,
    )  # see packed_logits
    if rows.token_loss is None:
        raise RuntimeError("packed per-sample losses need the per-token losses of the packed rows")
    token_loss = unpack_token_values(rows.token_loss, packed["gather"])
    mask = batch["labels"][:, 1:].to(device) != IGNORE_INDEX
    return SampleLosses(
        token_sum=token_loss.sum(dim=1), token_count=mask.sum(dim=1), token_loss=token_loss, token_mask=mask
    )


def check_packing_support(model: nn.Module, device, vocab_size: int, tol: float = 1e-4) -> None:
    """Raises unless the model keeps packed samples apart: two short random samples packed in one row must
    give the logits each gives alone (eval mode, no grad). Catches attention implementations or
    architectures that ignore the packed position ids (they would silently attend across samples)."""
    from dataflex.utils.modes import eval_mode

    gen = torch.Generator().manual_seed(0)
    first, second = (torch.randint(0, max(2, min(vocab_size, 1000)), (1, n), generator=gen) for n in (5, 7))
    ids = torch.cat([first, second], dim=1).to(device)
    pos = torch.cat([torch.arange(5), torch.arange(7)]).unsqueeze(0).to(device)
    with torch.no_grad(), eval_mode(model):
        try:
            together = packed_logits(model, ids, pos).float()
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"data.packing=true: {type(model).__name__} cannot run packed rows "
                f"(position_ids, use_cache=False): {exc}. Set data.packing=false."
            ) from exc
        alone = model(input_ids=second.to(device), use_cache=False).logits.float()
    diff = float((together[:, 5:] - alone).abs().max())
    if not diff <= tol * max(1.0, float(alone.abs().max())):
        impl = getattr(getattr(model, "config", None), "_attn_implementation", "?")
        raise ValueError(
            f"data.packing=true: this model's attention ({impl}) does not keep packed samples apart "
            f"(a sample's logits change by {diff:.3g} when another sample precedes it in the row). "
            "Set data.packing=false, or use model.attn_implementation=sdpa (or flash_attention_2 on GPU)."
        )
