"""Forward-only scoring in length buckets under a token budget: candidates are sorted by length so a batch
holds rows of similar length (padding does not dominate), each batch holds as many rows as fit
`max_tokens` padded tokens, and results come back in the caller's order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from dataflex.data.processor import collate
from dataflex.train.signals.memory import available_memory_bytes
from dataflex.utils.progress import progress

MAX_AUTO_TOKENS = 16384
"""Upper bound of the automatic budget on a GPU."""
MAX_AUTO_TOKENS_CPU = 2048
"""Upper bound of the automatic budget on a CPU: the peer's select_loss pool (1200 rows, tiny Qwen2 + LoRA)
took 3.4 s of CPU time at 512-2048 padded tokens per batch, 3.7 s at 4096 and 6.2 s at 16384 (batches
that outgrow the caches are slower; experiments/benchmarks/vs_dataflex/README.md, 2026-12-01 session 6)."""
MIN_AUTO_TOKENS = 512
MEMORY_SHARE = 0.25
"""Share of the free memory a scoring batch's activations may take (the model, optimizer and the next
training step's activations stay resident)."""


def length_batches(
    lengths: Sequence[int] | np.ndarray, *, max_tokens: int, max_rows: int | None = None
) -> list[np.ndarray]:
    """Positions into `lengths`, grouped: sorted by length (stable, so ties keep their order), each batch's
    rows x longest row <= max_tokens (a single longer row is a batch of its own), at most `max_rows` rows."""
    sizes = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        end = start + 1
        while (
            end < len(order)
            and (end + 1 - start) * sizes[order[end]] <= max_tokens
            and (max_rows is None or end - start < max_rows)
        ):
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def bytes_per_token(model, width: int, full_logits: bool) -> int:
    """Rough inference activation bytes per padded token: a layer's hidden/MLP activations, one row of
    attention scores, and the float32 logits (x3: logits, log-softmax, its input) when they are
    materialised."""
    config = getattr(model, "config", None)
    hidden = int(getattr(config, "hidden_size", 1024) or 1024)
    inter = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    heads = int(getattr(config, "num_attention_heads", 16) or 16)
    vocab = int(getattr(config, "vocab_size", 32000) or 32000)
    param = next(model.parameters(), None)
    item = param.element_size() if param is not None else 4
    return item * (8 * hidden + 3 * inter) + 4 * heads * width + (12 * vocab if full_logits else 0)


def auto_max_tokens(model, device, width: int, full_logits: bool) -> int:
    """Tokens per scoring batch that fit MEMORY_SHARE of the free memory, within [MIN, MAX]_AUTO_TOKENS
    (MAX_AUTO_TOKENS_CPU on a CPU)."""
    fit = int(
        MEMORY_SHARE * available_memory_bytes(device) // max(1, bytes_per_token(model, width, full_logits))
    )
    cap = MAX_AUTO_TOKENS if torch.device(device).type != "cpu" else MAX_AUTO_TOKENS_CPU
    return int(min(cap, max(MIN_AUTO_TOKENS, fit)))


def score_in_buckets(
    fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    data,
    ids: Sequence[int] | np.ndarray,
    *,
    pad_token_id: int,
    max_tokens: int,
    max_rows: int | None = None,
    desc: str = "score",
) -> torch.Tensor:
    """`fn(collated batch)` -> (rows, ...) for every item of `ids`, batched in length buckets, returned as one
    tensor in the order of `ids`."""
    features = [data[int(i)] for i in ids]
    if not features:
        return torch.zeros(0)
    batches = length_batches([len(f.input_ids) for f in features], max_tokens=max_tokens, max_rows=max_rows)
    out: torch.Tensor | None = None
    with progress(len(features), desc, unit="sample") as bar:
        for positions in batches:
            rows = fn(collate([features[p] for p in positions], pad_token_id)).cpu()
            if out is None:
                out = rows.new_zeros((len(features), *rows.shape[1:]))
            out[torch.as_tensor(positions)] = rows
            bar.update(len(positions))
    assert out is not None  # (features is not empty, so there was a batch)
    return out
