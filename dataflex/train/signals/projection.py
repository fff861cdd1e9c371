"""Seeded random projections of long vectors (per-sample gradients) to `proj_dim`, streamed in chunks.

Coordinate `i` of the input always meets the same projection rows, whatever way the input is cut into
blocks: the rows of chunk `c = i // chunk_size` come from a generator seeded by `(seed, c)`. So a vector
projected in one piece, per parameter, or per module gives the same result, and the full
`dim x proj_dim` matrix never has to sit in memory (only one `chunk_size x proj_dim` chunk at a time).

Kinds:
- `rademacher` / `gaussian`: dense Johnson-Lindenstrauss projections (TRAK's, which LESS uses), scaled by
  1/sqrt(proj_dim) so inner products are preserved in expectation. Cost: dim x proj_dim per vector; the
  chunk in use is the only part of the matrix in memory (regenerated for every call).
- `sparse`: a count sketch (feature hashing, Weinberger et al. 2009): each coordinate is added with a
  random sign to one random output bucket. Inner products are also preserved in expectation, with
  variance of the same order as a dense projection, at a cost of O(dim) per vector instead of
  O(dim x proj_dim) — the only kind affordable on a CPU for full fine-tuning. Its whole "matrix" is one
  (bucket, sign) pair per coordinate, O(dim) like a single gradient, so it is generated once and kept.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

PROJECTION_KINDS = ("sparse", "rademacher", "gaussian")


def _chunk_generator(seed: int, chunk: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


class RandomProjector:
    """Projects (B, dim) vectors, possibly given block by block, to (B, proj_dim)."""

    def __init__(
        self, dim: int, proj_dim: int, *, seed: int = 0, kind: str = "sparse", chunk_size: int = 1 << 15
    ) -> None:
        if kind not in PROJECTION_KINDS:
            raise ValueError(f"projection kind {kind!r} is unknown; choose one of {PROJECTION_KINDS}.")
        if proj_dim <= 0 or dim <= 0 or chunk_size <= 0:
            raise ValueError(
                f"RandomProjector needs dim, proj_dim, chunk_size > 0 (got {dim}, {proj_dim}, {chunk_size})."
            )
        self.dim, self.proj_dim, self.seed, self.kind, self.chunk_size = dim, proj_dim, seed, kind, chunk_size
        self._cached: tuple[int, object] | None = None
        self._sparse: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---- chunk material ------------------------------------------------------------------------------
    def _chunk(self, c: int):
        """Projection material of chunk `c`: sparse chunks are kept (O(dim) in all); the dense chunk in use
        is cached only until the next chunk is needed (blocks arrive in increasing offset order)."""
        if self.kind == "sparse" and c in self._sparse:
            return self._sparse[c]
        if self._cached is not None and self._cached[0] == c:
            return self._cached[1]
        rows = min(self.chunk_size, self.dim - c * self.chunk_size)
        g = _chunk_generator(self.seed, c)
        if self.kind == "sparse":
            buckets = torch.randint(0, self.proj_dim, (rows,), generator=g)
            signs = torch.randint(0, 2, (rows,), generator=g).float().mul_(2).sub_(1)
            sparse = self._sparse[c] = (buckets, signs)
            return sparse
        if self.kind == "rademacher":
            material = torch.randint(0, 2, (rows, self.proj_dim), generator=g, dtype=torch.int8).float()
            material.mul_(2).sub_(1).mul_(self.proj_dim**-0.5)
        else:
            material = torch.randn(rows, self.proj_dim, generator=g).mul_(self.proj_dim**-0.5)
        self._cached = (c, material)
        return material

    # ---- projection ----------------------------------------------------------------------------------
    def project_block(
        self, out: torch.Tensor, block: torch.Tensor, offset: int, *, consume: bool = False
    ) -> None:
        """Adds the projection of input columns [offset, offset + block.shape[1]) to `out` (B, proj_dim).

        `consume=True` lets the sparse kind apply its signs to `block` in place (no temporary copy)."""
        n = block.shape[1]
        if offset < 0 or offset + n > self.dim:
            raise ValueError(f"block [{offset}, {offset + n}) outside the projector's dim {self.dim}")
        pos = 0
        while pos < n:
            c, start = divmod(offset + pos, self.chunk_size)
            take = min(n - pos, self.chunk_size - start)
            part = block[:, pos : pos + take].float()
            material = self._chunk(c)
            if self.kind == "sparse":
                if material[0].device != out.device:  # kept on the device of use (moved once)
                    material = self._sparse[c] = (material[0].to(out.device), material[1].to(out.device))
                buckets, signs = material
                signs = signs[start : start + take]
                signed = part.mul_(signs) if consume and part.dtype == block.dtype else part * signs
                out.index_add_(1, buckets[start : start + take], signed)
            else:
                out.addmm_(part, material[start : start + take].to(out.device))
            pos += take

    def project_blocks(self, blocks: Iterable[torch.Tensor], batch: int, device=None) -> torch.Tensor:
        """Projects a vector given as consecutive blocks (B, n_i) covering exactly `dim` columns."""
        out = torch.zeros(batch, self.proj_dim, device=device)
        offset = 0
        for block in blocks:
            flat = block.reshape(batch, -1)
            self.project_block(out, flat, offset)
            offset += flat.shape[1]
        if offset != self.dim:
            raise ValueError(f"blocks covered {offset} columns, the projector expects {self.dim}")
        return out

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, proj_dim)."""
        out = torch.zeros(x.shape[0], self.proj_dim, device=x.device)
        self.project_block(out, x, 0)
        return out
