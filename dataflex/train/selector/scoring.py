"""Signals the built-in selectors score candidates with, computed once per update and shared by ranks.

Every function here takes the candidate ids, lets each rank compute a contiguous shard, and all-gathers
the rows back in candidate order, so every rank holds the same numbers and makes the same decision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from dataflex.data.processor import Features
from dataflex.train.distributed import all_gather_cat
from dataflex.train.evaluation import domain_loss_sums, scoring_max_tokens
from dataflex.train.selector.base_selector import SelectionContext
from dataflex.train.signals.embeddings import sample_embeddings
from dataflex.train.signals.gradients import AdamPreconditioner, collect_gradient_features, num_trainable
from dataflex.train.signals.kronecker import KroneckerProjector
from dataflex.train.signals.projection import PROJECTION_KINDS, RandomProjector


def sharded(fn: Callable[[np.ndarray], torch.Tensor], ids: np.ndarray, ctx: SelectionContext) -> torch.Tensor:
    """`fn(ids)` computed by the ranks together: each rank a contiguous shard, gathered in order."""
    ids = np.asarray(ids, dtype=np.int64)
    if ctx.world_size <= 1:
        return fn(ids).cpu()
    shards = np.array_split(ids, ctx.world_size)
    shard = shards[ctx.rank]
    if ctx.lockstep and len(shard) < len(shards[0]):  # as many items (so forwards) as the longest shard
        out = fn(np.concatenate([shard, ids[:1]]))[: len(shard)].to(ctx.device)
    else:
        out = fn(shard).to(ctx.device)
    return all_gather_cat(out).cpu()


# ---- losses ------------------------------------------------------------------------------------------
def sample_losses(
    model,
    data,
    ids: Sequence[int] | np.ndarray,
    *,
    batch_size: int | None,
    pad_token_id: int,
    device,
    max_tokens: int | None = None,
    lockstep: bool = False,
) -> torch.Tensor:
    """Token-mean loss of each item, in the order of `ids`: forward only (inference mode, eval mode), length-
    bucketed batches of at most `max_tokens` padded tokens (None: sized from free memory) and `batch_size`
    rows (None: no row cap); `lockstep` (ZeRO-3): consecutive batches of `batch_size` rows instead."""
    rows = np.asarray(ids, dtype=np.int64)
    budget = scoring_max_tokens(model, data, rows, max_tokens, device)
    per_row = domain_loss_sums(
        model,
        data,
        rows,
        pad_token_id=pad_token_id,
        device=device,
        max_tokens=budget,
        max_rows=batch_size,
        fixed_batches=lockstep,
    )
    if not len(per_row):
        return torch.zeros(0)
    return (per_row[:, 0] / per_row[:, 1].clamp(min=1)).float()


def cached(signal: str, ids: np.ndarray, ctx: SelectionContext, data, compute) -> torch.Tensor:
    """`compute(ids)`, through the pipeline's shared signal cache when there is one and `data` is the
    training data (the cache is keyed by training item id)."""
    if ctx.signals is None or data is not ctx.train_data:
        return compute(ids)
    return ctx.signals.get(signal, np.asarray(ids, dtype=np.int64), compute)


def candidate_losses(model, ids: np.ndarray, ctx: SelectionContext, data=None) -> torch.Tensor:
    data = data if data is not None else ctx.train_data
    return cached("loss", ids, ctx, data, lambda rows: _sharded_losses(model, rows, ctx, data))


def _sharded_losses(model, ids: np.ndarray, ctx: SelectionContext, data) -> torch.Tensor:
    return sharded(
        lambda s: sample_losses(
            model,
            data,
            s,
            batch_size=ctx.eval_batch_size,
            max_tokens=ctx.max_tokens,
            pad_token_id=ctx.pad_token_id,
            device=ctx.device,
            lockstep=ctx.lockstep,
        ),
        ids,
        ctx,
    )


# ---- gradient features ---------------------------------------------------------------------------------
@dataclass
class GradientFeatureSpec:
    """How LESS-style gradient features are made (shared by less, cluster_less and nice)."""

    proj_dim: int = 2048
    proj_type: str = "sparse"
    seed: int = 0
    gradient_type: str = "adam"
    """Training features: `adam` (Adam-preconditioned, LESS) or `sgd` (plain gradient)."""
    bias_correction: bool = True
    adam_variant: str = "paper"
    """`paper` (bias-corrected, the optimizer's betas/eps) | `code` (the official LESS code; see
    AdamPreconditioner)."""

    def projector(self, model) -> RandomProjector | KroneckerProjector:
        if self.proj_type == "kronecker":
            return KroneckerProjector(model, self.proj_dim, seed=self.seed)
        if self.proj_type not in PROJECTION_KINDS:
            raise ValueError(
                f"component.proj_type={self.proj_type!r} is unknown; choose one of "
                f"{PROJECTION_KINDS + ('kronecker',)}."
            )
        return RandomProjector(num_trainable(model), self.proj_dim, seed=self.seed, kind=self.proj_type)


def gradient_feature_rows(
    model,
    data,
    ids: np.ndarray,
    ctx: SelectionContext,
    spec: GradientFeatureSpec,
    *,
    optimizer=None,
    precondition: bool,
) -> torch.Tensor:
    """(len(ids), proj_dim) L2-normalised projected per-sample gradients of `data[ids]` (sharded)."""
    pre = None
    if precondition:
        if optimizer is None:
            raise ValueError(
                "Adam-preconditioned gradient features need the live optimizer (the trainer passes "
                "`optimizer=`); set component.gradient_type=sgd to use plain gradients."
            )
        pre = AdamPreconditioner(optimizer, bias_correction=spec.bias_correction, variant=spec.adam_variant)
    projector = spec.projector(model)
    return cached(
        f"grad:{spec}:precondition={precondition}",
        ids,
        ctx,
        data,
        lambda rows: sharded(
            lambda s: collect_gradient_features(
                model,
                data,
                s,
                batch_size=ctx.batch_size,
                pad_token_id=ctx.pad_token_id,
                projector=projector,
                preconditioner=pre,
                device=ctx.device,
            ),
            rows,
            ctx,
        ),
    )


# ---- embeddings ----------------------------------------------------------------------------------------
class _ReTokenized:
    """A view of training items re-tokenized for a separate encoder (decoded with the training tokenizer)."""

    def __init__(self, data, tokenizer, encoder_tokenizer, max_len: int) -> None:
        self.data, self.tok, self.enc_tok, self.max_len = data, tokenizer, encoder_tokenizer, max_len

    def __getitem__(self, i: int) -> Features:
        item = self.data[int(i)]
        text = self.tok.decode(item.input_ids, skip_special_tokens=True)
        ids = self.enc_tok(text, truncation=True, max_length=self.max_len)["input_ids"] or [
            self.enc_tok.pad_token_id
        ]
        return Features(list(ids), [-100] * len(ids), item.domain, item.sample_id)


class EncoderCache:
    """A local embedding model (any HF model dir) loaded once and reused across updates."""

    def __init__(self, path: str, device) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(path).to(device).eval()


def embeddings(
    model,
    data,
    ids: np.ndarray,
    ctx: SelectionContext,
    encoder: EncoderCache | None = None,
    max_len: int = 512,
) -> torch.Tensor:
    """(len(ids), hidden) L2-normalised mean-pooled embeddings by the training model or a local encoder."""
    if encoder is None:
        embedder, view, pad = model, data, ctx.pad_token_id
    else:
        embedder, view, pad = (
            encoder.model,
            _ReTokenized(data, ctx.tokenizer, encoder.tokenizer, max_len),
            encoder.tokenizer.pad_token_id,
        )
    hidden = int(embedder.config.hidden_size)

    def fn(shard: np.ndarray) -> torch.Tensor:
        if len(shard) == 0:  # a rank with nothing to embed still joins the gather with the right width
            return torch.zeros(0, hidden)
        return sample_embeddings(
            embedder, view, shard, batch_size=ctx.eval_batch_size or 64, pad_token_id=pad, device=ctx.device
        )

    if encoder is not None:
        return sharded(fn, ids, ctx)
    return cached("embedding", ids, ctx, data, lambda rows: sharded(fn, rows, ctx))


# ---- the validation / target set -------------------------------------------------------------------------
@dataclass
class TargetSet:
    """The examples a selector aims at, and the subtask (domain) of each for LESS's per-subtask mean."""

    data: object
    ids: np.ndarray
    groups: np.ndarray
    group_names: list[str]


def missing_target_message(selector: str) -> str:
    return (
        f"selector {selector!r} needs a validation/target set: set component.target_domain=<a domain of "
        "the eval split, e.g. target> (or trainer.target_domain for every selector), or "
        "component.target_dataset=<a dataset spec>."
    )


def _first_per_domain(domain_ids: np.ndarray, wanted: Sequence[int], cap: int | None) -> np.ndarray:
    rows = [np.flatnonzero(domain_ids == d)[:cap] if cap else np.flatnonzero(domain_ids == d) for d in wanted]
    return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)


def resolve_target(
    ctx: SelectionContext,
    *,
    selector: str,
    target_domain: str | None,
    target_dataset: str | None,
    target_split: str = "eval",
    target_max_samples: int | None = None,
) -> TargetSet:
    """The target set from config: the `target_split` (eval or train) split of `target_domain`
    (comma-separated for several subtasks), or of the named `target_dataset`. At most `target_max_samples`
    rows per subtask (the first ones: deterministic). The selector's own keys win; else the trainer's defaults
    (trainer.target_domain / trainer.target_dataset)."""
    if not target_domain and not target_dataset:
        target_domain, target_dataset = ctx.target_domain, ctx.target_dataset
    if not target_domain and not target_dataset:
        raise ValueError(missing_target_message(selector))
    if target_domain and target_dataset:
        raise ValueError("set only one of component.target_domain and component.target_dataset.")
    if target_domain:
        if target_split not in ("eval", "train"):
            raise ValueError(f"component.target_split must be eval or train, got {target_split!r}.")
        data = ctx.eval_data if target_split == "eval" else ctx.train_data
        if data is None:
            raise ValueError(
                f"component.target_domain={target_domain!r} uses the eval split, but the data has no "
                "eval split; add `eval:` files to the dataset, set component.target_split=train (the "
                "first rows of the domain's training split) or set component.target_dataset."
            )
        names = [n.strip() for n in str(target_domain).split(",") if n.strip()]
        unknown = [n for n in names if n not in data.domain_names]
        _explain_missing_eval(ctx, names, data)
        if unknown:
            raise ValueError(
                f"component.target_domain: {unknown} not among the eval domains {data.domain_names}."
            )
        wanted = [data.domain_names.index(n) for n in names]
    else:
        assert target_dataset  # (exactly one of the two is set, checked above)
        data = load_target_dataset(ctx.train_data, target_dataset, target_split)
        names = list(data.domain_names)
        wanted = list(range(len(names)))
    ids = _first_per_domain(np.asarray(data.domain_ids), wanted, target_max_samples)
    if len(ids) == 0:
        raise ValueError(
            f"the target set of selector {selector!r} is empty (component.target_domain/target_dataset)."
        )
    groups = np.asarray([wanted.index(int(data.domain_ids[i])) for i in ids], dtype=np.int64)
    return TargetSet(data=data, ids=ids, groups=groups, group_names=[names[k] for k in range(len(wanted))])


def _explain_missing_eval(ctx: SelectionContext, names: list[str], eval_data) -> None:
    """A target domain whose dataset(s) declare no `eval:` has an empty target set: say which datasets."""
    engine = getattr(ctx.train_data, "engine", None)
    if engine is None or not hasattr(engine, "datasets_without_eval"):
        return
    counts = np.bincount(np.asarray(eval_data.domain_ids), minlength=len(eval_data.domain_names))
    empty = [
        n for n in names if n not in eval_data.domain_names or counts[eval_data.domain_names.index(n)] == 0
    ]
    lacking = engine.datasets_without_eval(empty)
    if lacking:
        raise ValueError(
            f"component.target_domain={','.join(names)}: its dataset(s) {lacking} declare no `eval:` "
            "entry in dataset_info, so the target set (that domain's eval split) is empty. Add "
            "`eval: <file or split>` to them, or set component.target_dataset."
        )


def load_target_dataset(train_data, spec: str, split: str):
    """A named target dataset, tokenized exactly like the training data."""
    from dataflex.data import DataEngine
    from dataflex.data.processor import TokenizedData

    args = replace(train_data.engine.args, dataset=spec, max_samples=None)
    engine = DataEngine(args, split=split)
    proc = train_data.processor
    return TokenizedData(
        engine,
        proc.tokenizer,
        cutoff_len=proc.cutoff_len,
        mode=train_data.mode,
        template=args.template,
        train_on_prompt=args.train_on_prompt,
        store=getattr(train_data, "store_settings", None),
    )


def group_means(sims: torch.Tensor, groups: np.ndarray) -> torch.Tensor:
    """(N, M) similarities -> (N, G): the mean over the targets of each subtask (group g = column g)."""
    groups_t = torch.as_tensor(groups, dtype=torch.long)
    n_groups = int(groups_t.max()) + 1
    sums = torch.zeros(sims.shape[0], n_groups, dtype=sims.dtype).index_add_(1, groups_t, sims)
    counts = torch.bincount(groups_t, minlength=n_groups).to(sims.dtype)
    return sums / counts


def group_mean_max(sims: torch.Tensor, groups: np.ndarray) -> torch.Tensor:
    """LESS's aggregation: (N, M) similarities -> mean over the targets of each subtask -> max over
    subtasks."""
    return group_means(sims, groups).max(dim=1).values
