"""What a proportion mixture may take from each domain: item token counts (for `mixture_unit=tokens`), the
per-domain `max_repetitions` bound from dataset_info, and the feasibility check run before training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dataflex.data.errors import MixtureInfeasible


def item_token_counts(data) -> np.ndarray:
    """Input tokens of every training item. A dataset that knows them (a token store: `token_counts()`) says
    so for free; otherwise every item is built once (SFT items are tokenized and cached, as training
    would)."""
    if callable(getattr(data, "token_counts", None)):
        return np.asarray(data.token_counts(), dtype=np.int64)
    store = getattr(data, "store", None)
    if store is not None:  # the token store's offsets: no item is read
        lengths = np.diff(np.asarray(store.offsets, dtype=np.int64))
        if data.mode == "pretrain":
            return lengths
        index = data.engine.data_index
        return lengths[np.asarray(store.dataset_start)[index.dataset_ids] + index.row_ids]
    return np.fromiter((len(data[i].input_ids) for i in range(len(data))), dtype=np.int64, count=len(data))


def domain_max_repetitions(data, names: Sequence[str]) -> list[float | None]:
    """Per domain, the strictest `max_repetitions` of its datasets (None: unbounded)."""
    infos = getattr(getattr(data, "engine", None), "dataset_infos", {}) or {}
    caps: dict[str, float] = {}
    for info in infos.values():
        if info.max_repetitions is not None:
            caps[info.domain] = min(caps.get(info.domain, info.max_repetitions), info.max_repetitions)
    return [caps.get(n) for n in names]


def domain_supply(domain_rows: Sequence[np.ndarray], item_tokens: np.ndarray | None) -> np.ndarray:
    """What each domain holds in the mixing unit: rows, or tokens when `item_tokens` is given."""
    if item_tokens is None:
        return np.asarray([len(r) for r in domain_rows], dtype=np.float64)
    return np.asarray([float(item_tokens[r].sum()) for r in domain_rows], dtype=np.float64)


def expected_demand(
    proportions: np.ndarray,
    num_samples: int,
    domain_rows: Sequence[np.ndarray],
    item_tokens: np.ndarray | None,
) -> np.ndarray:
    """What `num_samples` draws at `proportions` take from each domain, in the mixing unit. Tokens: domain d's
    share of the samples is p_d / mean_len_d (normalised), so the run trains T = N / sum_d(p_d / mean_len_d)
    tokens and takes p_d * T of them from d (exact up to one sample per domain)."""
    p = np.asarray(proportions, dtype=np.float64)
    if item_tokens is None:
        return p * num_samples
    mean_len = np.asarray([item_tokens[r].mean() if len(r) else 1.0 for r in domain_rows], dtype=np.float64)
    total_tokens = num_samples / float(np.sum(p / mean_len))
    return p * total_tokens


def check_feasible(
    names: Sequence[str],
    proportions: np.ndarray,
    demand: np.ndarray,
    supply: np.ndarray,
    max_repetitions: Sequence[float | None],
    unit: str,
    what: str,
) -> None:
    """Raises `MixtureInfeasible` listing every domain whose demand exceeds supply x max_repetitions."""
    bad = [
        f"{n}: needs {d:,.0f} {unit} at proportion {p:.3f}, has {s:,.0f} x max_repetitions {r:g} = "
        f"{s * r:,.0f} (would repeat it {d / max(s, 1):.2f} times)"
        for n, p, d, s, r in zip(names, proportions, demand, supply, max_repetitions)
        if r is not None and d > s * r
    ]
    if bad:
        raise MixtureInfeasible(
            f"the mixture cannot be met within max_repetitions over {what}: "
            + "; ".join(bad)
            + ". Raise max_repetitions of those domains in dataset_info, lower their "
            "proportions, or train fewer steps."
        )
