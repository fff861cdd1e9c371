"""Per-step selectors: each step they get the B candidates of the step (collated) and keep b of them. They
compute their signal from the model as it is at that step (scoring forwards in eval mode: no dropout) and
decide with a pure rule of `perstep/rules.py`.

`grad_norm` and `greats` run a forward + backward over the candidates anyway; they leave its factors in
`recorded`, and the trainer assembles the kept rows' update from them (GhostGradients.batch_gradient)
instead of a second forward + backward of those rows when that is exact (trainer.reuse_candidate_pass).

Cost per step, in forwards of one sample (backward ~ 2 forwards), for B = 2b against static training on b
(3b): `uniform` nothing; `max_loss` a no-grad forward of B; `rho_loss` the same plus, once per sample id, a
reference forward (a fixed reference's loss never changes, so it is cached by sample id as the paper
precomputes the irreducible losses); `grad_norm` a forward and a backward to the layer outputs of B plus the
ghost norms; `greats` that of B + n_val and the ghost Gram; for both, the update then only adds the weight
gradients of the b kept (~b) when the pass is reused, else a second forward + backward of b (~3b). The loss
selectors' b are trained by the loop as any batch: keeping their candidate forward's graph instead (a
forward with grad of B, then a backward of the kept rows' loss) costs more than the no-grad forward plus a
forward of b, because a backward through batched layers runs over all B rows whatever their loss weight
(measured: experiments/benchmarks/per_step/README.md, "physical limit").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dataflex.data.processor import IGNORE_INDEX, collate
from dataflex.train.perstep.rules import (
    Choice,
    greats_greedy,
    rho_loss_scores,
    top_b,
    uniform_choice,
)
from dataflex.train.signals.ghost import GhostGradients, ghost_gradients
from dataflex.train.signals.losses import model_losses
from dataflex.utils.modes import eval_mode


@dataclass
class Candidates:
    """What a per-step selector sees at step `step`: the B candidate rows (collated, with `sample_ids`) and
    the learning rate the step will be taken with (GREATS' Taylor expansion needs it)."""

    batch: dict[str, torch.Tensor]
    step: int
    lr: float
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def size(self) -> int:
        return int(self.batch["sample_ids"].shape[0])


class PerStepSelector(ABC):
    """Keeps b of the step's B candidates. `choose` must be a function of (model, candidates) and the
    selector's state only, so every rank decides the same (the trainer also broadcasts rank 0's choice)."""

    name = "per_step"
    reads_rows = True
    """False for a selector that never looks at the candidates' tokens (uniform): the trainer then hands it
    only their `sample_ids` instead of collating B rows."""
    recorded: GhostGradients | None = None
    """After `choose`: the factored per-sample gradients of the candidate pass (rows 0..B-1 = the candidates
    in order, per-sample loss = the token mean, the model in eval mode), for selectors that ran one; the
    trainer takes it (and clears it) to assemble the kept rows' update."""
    separable = False
    """True when the choice is the top b of a score each row gets on its own (`row_scores`): the trainer
    then splits the candidates over the ranks, each scores its share, and the scores are all-gathered."""

    @abstractmethod
    def choose(self, model: nn.Module, candidates: Candidates, b: int) -> Choice: ...

    def row_scores(
        self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
    ) -> torch.Tensor:
        """(n,) float64 scores of the rows of `batch` (separable selectors only)."""
        raise NotImplementedError(f"{type(self).__name__} is not separable")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


def _losses(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """(B,) token-mean losses of one no-grad forward (the configured memory-lean loss path)."""
    with torch.no_grad(), eval_mode(model):
        return model_losses(model, batch, device).mean.detach().float().cpu()


class UniformPerStep(PerStepSelector):
    """b of B uniformly at random (seeded by (seed, step)): the baseline every method is read against."""

    name = "uniform"
    reads_rows = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def choose(self, model: nn.Module, candidates: Candidates, b: int) -> Choice:
        return uniform_choice(candidates.size, b, seed=self.seed, step=candidates.step)


class MaxLossPerStep(PerStepSelector):
    """MaxLoss (Loshchilov & Hutter 2015; a GREATS / RHO-LOSS baseline): the b highest training losses."""

    name = "max_loss"
    separable = True

    def row_scores(
        self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
    ) -> torch.Tensor:
        return _losses(model, batch, device).double()

    def choose(self, model: nn.Module, candidates: Candidates, b: int) -> Choice:
        return top_b(self.row_scores(model, candidates.batch, candidates.device), b)


class RhoLossPerStep(PerStepSelector):
    """RHO-LOSS: the b highest training loss minus reference loss. The reference's losses are cached by
    sample id (it is frozen), so each sample's reference forward runs once per run. `reference_model`: a
    module, or the folder of a trained model (full or LoRA adapter, same tokenizer), loaded by the loader
    DoReMi uses (`mixer/doremi.load_reference_model`: a missing folder or another vocabulary is an error)."""

    name = "rho_loss"
    separable = True

    def __init__(
        self, reference_model: nn.Module | str, *, accelerator: Any = None, tokenizer: Any = None
    ) -> None:
        if isinstance(reference_model, nn.Module):
            self.reference = reference_model.eval().requires_grad_(False)
        else:
            from dataflex.train.mixer.doremi import load_reference_model

            device = accelerator.device if accelerator is not None else torch.device("cpu")
            vocab = len(tokenizer) if tokenizer is not None else None
            self.reference = load_reference_model(str(reference_model), device, vocab)
        self._cache: dict[int, float] = {}

    def reference_losses(self, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        ids = [int(i) for i in batch["sample_ids"]]
        missing = [k for k, i in enumerate(ids) if i not in self._cache]
        if missing:
            rows = torch.tensor(missing)
            sub = {k: v.index_select(0, rows) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            for k, loss in zip(missing, _losses(self.reference, sub, device).tolist()):
                self._cache[ids[k]] = loss
        return torch.tensor([self._cache[i] for i in ids], dtype=torch.float64)

    def row_scores(
        self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
    ) -> torch.Tensor:
        return rho_loss_scores(_losses(model, batch, device), self.reference_losses(batch, device))

    def choose(self, model: nn.Module, candidates: Candidates, b: int) -> Choice:
        return top_b(self.row_scores(model, candidates.batch, candidates.device), b)


class GradNormPerStep(PerStepSelector):
    """GradNorm (Katharopoulos & Fleuret 2018; a GREATS baseline): the b largest per-sample gradient norms,
    from the ghost Gram diagonal (no per-sample gradient is formed)."""

    name = "grad_norm"

    def __init__(self, method: str = "auto") -> None:
        self.method = method

    separable = True

    def _pass(
        self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
    ) -> tuple[torch.Tensor, GhostGradients]:
        with eval_mode(model):
            ghost = ghost_gradients(model, batch, device=device)
            return ghost.squared_norms(method=self.method).detach().cpu().double().sqrt(), ghost

    def row_scores(
        self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device
    ) -> torch.Tensor:
        return self._pass(model, batch, device)[0]

    def choose(self, model: nn.Module, candidates: Candidates, b: int) -> Choice:
        scores, self.recorded = self._pass(model, candidates.batch, candidates.device)
        return top_b(scores, b)


def concat_batches(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], pad_token_id: int) -> dict:
    """Two right-padded collated batches as one (rows of `a` first), padded to the wider of the two."""
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    out = {}
    for key in a:
        if key not in b:
            continue
        x, y = a[key], b[key]
        if key in fill:
            x, y = (torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill[key]) for t in (x, y))
        out[key] = torch.cat([x, y])
    return out


class ValidationDraw:
    """`val_size` rows of the validation pool per step, drawn by a generator seeded by (seed, step) only (the
    same on every rank and after a resume), collated. The pool: the eval split's rows of `target_domain`, or
    the whole eval split."""

    def __init__(
        self, eval_data: Any, pad_token_id: int, *, val_size: int, seed: int, target_domain: str | None
    ) -> None:
        if eval_data is None or len(eval_data) == 0:
            raise ValueError("greats needs validation rows: the data has no eval split (data.val_size > 0).")
        if val_size <= 0:
            raise ValueError(f"component.val_size must be > 0, got {val_size}")
        self.data, self.pad, self.val_size, self.seed = eval_data, pad_token_id, val_size, seed
        self.pool = np.arange(len(eval_data))
        if target_domain:
            names = list(getattr(eval_data, "domain_names", []))
            if target_domain not in names:
                raise ValueError(f"component.target_domain={target_domain!r} is not a domain of {names}")
            self.pool = np.asarray(eval_data.domain_rows(names.index(target_domain)))
            if not len(self.pool):
                raise ValueError(f"component.target_domain={target_domain!r} has no eval rows")

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([int(self.seed), int(step), 0x6A1])
        rows = rng.choice(self.pool, size=min(self.val_size, len(self.pool)), replace=False)
        return collate([self.data[int(i)] for i in rows], self.pad)


class GreatsPerStep(PerStepSelector):
    """GREATS: greedy on lr <g_i, g_val> - lr^2 sum_{j chosen} <g_i, g_j> (rules.greats_greedy), with the
    gradient dot products from ONE recorded forward + backward over the candidates and `val_size` validation
    rows together (ghost inner products, signals/ghost.py). The validation rows of a step are drawn seeded
    by (seed, step) from the eval split (`target_domain`'s rows if set), as the authors draw a small
    validation batch every iteration; `validation` replaces the draw (tests)."""

    name = "greats"

    def __init__(
        self,
        pad_token_id: int,
        *,
        eval_data: Any = None,
        val_size: int = 4,
        target_domain: str | None = None,
        seed: int = 0,
        self_interaction: bool = False,
        method: str = "auto",
        validation: Callable[[int], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.validation = validation or ValidationDraw(
            eval_data, pad_token_id, val_size=val_size, seed=seed, target_domain=target_domain
        )
        self.pad_token_id = pad_token_id
        self.self_interaction = self_interaction
        self.method = method

    def signals(self, model: nn.Module, candidates: Candidates) -> tuple[torch.Tensor, torch.Tensor]:
        """((B,) <g_i, mean validation gradient>, (B, B) Gram) of the candidates."""
        n = candidates.size
        val = self.validation(candidates.step)
        both = concat_batches(candidates.batch, val, self.pad_token_id)
        with eval_mode(model):
            ghost = ghost_gradients(model, both, device=candidates.device)
            dots = ghost.dots(torch.arange(n), method=self.method).detach().cpu()  # (B, B + n_val)
        self.recorded = ghost  # rows 0..n-1: the candidates (the validation rows follow)
        return dots[:, n:].mean(1), dots[:, :n]

    def choose(self, model: nn.Module, candidates: Candidates, b: int) -> Choice:
        val_dots, gram = self.signals(model, candidates)
        return greats_greedy(val_dots, gram, b, candidates.lr, self_interaction=self.self_interaction)
