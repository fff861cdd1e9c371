"""SFT packing that keeps sample identity (`data.packing=true`).

The loop has already decided which samples form each micro-batch (the sampler's plan is untouched); packing
only changes how that micro-batch is laid out for the model's forward:

- **Rows.** The samples are placed greedily by length, longest first, each into the first row that still has
  room (first-fit decreasing). Rows are right-padded to the longest row. The row capacity is chosen per
  micro-batch: each multiple of the longest sample up to `max_capacity` (`data.cutoff_len`) is tried and the
  plan with the fewest token slots (rows x longest row; ties: the narrower rows, as attention grows with the
  row length) is kept. The longest sample alone is one candidate, so a packed micro-batch never holds more
  token slots than the padded one.
- **Positions and attention.** Position ids restart at 0 for every sample. The model is called with these
  `position_ids`, no 2D attention mask and `use_cache=False`: transformers (>= 4.56, the `masking_utils` path
  of LLaMA, Qwen2, Mistral, GPT-2, ...) then derives a block-diagonal causal mask from the position ids, so no
  token attends across samples. (With the default `use_cache=True` it builds a KV cache and skips that
  detection: attention then silently crosses samples; `check_packing_support` proves the model keeps samples
  apart before training.)
- **Labels.** Each sample's first token gets label -100 in the packed row, so the next-token loss never
  predicts a sample's first token from the previous sample (unpacked, that token is never a target either).
- **Identity.** `gather` maps every (sample, shifted position) of the ordinary padded per-sample layout to its
  place in the packed rows: `unpack_token_values` turns the packed (R, W-1) per-token losses back into the
  per-sample (B, T-1) layout, in the micro-batch's original sample order. Per-sample losses, token counts,
  sample ids and domains are therefore exactly those of the unpacked run, and every consumer (selectors,
  mixers, weighters, reference models, token-level weighting) sees the unpacked layout.

The packed batch also keeps the ordinary padded tensors (`input_ids`, `attention_mask`, `labels`): components
that run their own forward on the batch (DoReMi's and Rho-1's reference models) use those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dataflex.data.processor import IGNORE_INDEX, Features, collate


def plan_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: lists of sample positions per row (each row's samples in their batch order).
    Ties keep the batch order, so the plan is deterministic."""
    if capacity <= 0:
        raise ValueError(f"packing capacity must be > 0, got {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"a sample of {n} tokens does not fit a packed row of {capacity} tokens")
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(capacity - n)
    return [sorted(r) for r in rows]


def best_plan(lengths: Sequence[int], max_capacity: int) -> list[list[int]]:
    """First-fit-decreasing plan with the fewest token slots over capacities k x longest <= max_capacity."""
    longest = max(lengths)
    best: list[list[int]] = []
    best_cost: tuple[int, int] | None = None
    for capacity in range(longest, max(max_capacity, longest) + 1, longest):
        rows = plan_rows(lengths, capacity)
        width = max(sum(lengths[i] for i in row) for row in rows)
        cost = (len(rows) * width, width)
        if best_cost is None or cost < best_cost:
            best, best_cost = rows, cost
    return best


def collate_packed(features: Sequence[Features], pad_token_id: int, max_capacity: int) -> dict[str, Any]:
    """The ordinary padded micro-batch (see `collate`) plus `batch["packed"]`: `input_ids`, `labels`,
    `position_ids` (R, W) of the packed rows and `gather` (B, T-1), the flat index into the packed (R, W-1)
    shifted per-token values of each sample's shifted tokens (padding points one past the end)."""
    batch: dict[str, Any] = collate(features, pad_token_id)
    lengths = [len(f.input_ids) for f in features]
    rows = best_plan(lengths, max_capacity)
    width = max(sum(lengths[i] for i in row) for row in rows)
    n_rows, seq = len(rows), batch["input_ids"].shape[1]
    input_ids = torch.full((n_rows, width), pad_token_id, dtype=torch.long)
    labels = torch.full((n_rows, width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((n_rows, width), dtype=torch.long)
    dummy = n_rows * (width - 1)
    gather = torch.full((len(features), max(seq - 1, 0)), dummy, dtype=torch.long)
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            f, n = features[i], lengths[i]
            input_ids[r, offset : offset + n] = torch.tensor(f.input_ids)
            labels[r, offset : offset + n] = torch.tensor(f.labels)
            labels[r, offset] = IGNORE_INDEX  # never predicted from the previous sample
            position_ids[r, offset : offset + n] = torch.arange(n)
            gather[i, : n - 1] = r * (width - 1) + offset + torch.arange(n - 1)
            offset += n
        # padding: its own run of positions (0, 1, ...), so it forms a separate block that no sample sees
        position_ids[r, offset:] = torch.arange(width - offset)
    batch["packed"] = {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "gather": gather,
    }
    return batch


def unpack_token_values(packed_values: torch.Tensor, gather: torch.Tensor) -> torch.Tensor:
    """(R, W-1) per-token values of the packed rows -> (B, T-1) in the per-sample layout (0 on padding).
    Differentiable: gradients flow back to the packed rows."""
    flat = torch.cat([packed_values.reshape(-1), packed_values.new_zeros(1)])
    return flat[gather.to(flat.device)]
