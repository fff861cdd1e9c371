"""Per-sample losses from one batched forward: token sums and supervised-token counts per row.

Two ways to get them from a causal LM (`trainer.loss_impl`):
- `plain`: `model(...).logits` (B x T x V) and a float32 cross entropy over all of it;
- `chunked` (what `auto` picks where the model allows): the final hidden states are taken from the model's
  decoder during the same forward (the head itself runs on the last position only, `logits_to_keep=1`), and
  only the supervised tokens go through the LM head, `trainer.loss_chunk_size` tokens at a time (default:
  sized so one chunk's logits are ~128 MiB), with the logits recomputed in backward (signals/chunked_ce.py):
  peak memory no longer scales with V x T;
- `liger` (CUDA, liger-kernel installed): liger's fused linear cross entropy with per-token losses, used only
  after a self-check proves its gradient honours per-token weights (else it is refused, never silently
  unweighted).
Which path a model gets is decided once per model: the chunked head must reproduce `model(...).logits` on a
short probe (so logit soft-capping, scaling or a wrapper we do not know about cannot silently change the
loss); where it cannot, `auto` falls back to `plain` and logs why, `chunked` raises.
"""

from __future__ import annotations

import inspect
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from dataflex.config.trainer import LOSS_IMPLS
from dataflex.data.processor import IGNORE_INDEX
from dataflex.train.distributed import maybe_wrapped
from dataflex.train.signals.chunked_ce import checkpointed_module_cross_entropy, chunked_linear_cross_entropy
from dataflex.utils.logging import logger

__all__ = [
    "LOSS_IMPLS",
    "LossSettings",
    "SampleLosses",
    "configure_losses",
    "model_losses",
    "per_sample_losses",
]


@dataclass
class SampleLosses:
    token_sum: torch.Tensor
    """(B,) summed next-token loss over each sample's supervised tokens (keeps the graph)."""
    token_count: torch.Tensor
    """(B,) number of supervised tokens per sample."""
    token_loss: torch.Tensor | None = None
    """(B, T-1) per-token loss, 0 on masked tokens (keeps the graph); for token-level signals (DoReMi)."""

    token_mask: torch.Tensor | None = None
    """(B, T-1) True where the token is supervised."""

    @property
    def mean(self) -> torch.Tensor:
        """(B,) token-mean loss per sample; 0 for a sample with no supervised token."""
        return self.token_sum / self.token_count.clamp(min=1)


def weighted_loss(values: torch.Tensor, weights: torch.Tensor, world_size: int) -> torch.Tensor:
    """This rank's micro-batch share of a weighted loss over the global batch, sum_i w_i x_i (the weights
    already normalised over the global batch, not differentiated), times `world_size` because the ranks'
    gradients are averaged. The one weighted-loss path: dynamic_weight (w from the weighter; x sample means or
    token losses) and DoReMi (w = alpha of the sample's domain over its normaliser; x token-loss sums)."""
    return (weights * values).sum() * world_size


def rescaled_mean_loss(losses: SampleLosses, factors: torch.Tensor, reduction: str, ctx: Any) -> torch.Tensor:
    """This rank's share of the global batch's plain mean loss with each row's loss multiplied by its
    `factors` entry (InfoBatch's 1 / (1 - prune_ratio) rescale; trainer=infobatch and the pipeline's prune
    stage): mean over samples, or over supervised tokens with `reduction="token"`, times `world_size`
    because the ranks' gradients are averaged."""
    factors = factors.to(device=losses.mean.device, dtype=losses.mean.dtype)
    if reduction == "token":
        return (factors * losses.token_sum).sum() * ctx.world_size / max(ctx.global_tokens, 1)
    return (factors * losses.mean).sum() * ctx.world_size / ctx.global_samples


def _from_token_losses(token_loss: torch.Tensor, mask: torch.Tensor) -> SampleLosses:
    return SampleLosses(
        token_sum=token_loss.sum(dim=1), token_count=mask.sum(dim=1), token_loss=token_loss, token_mask=mask
    )


def per_sample_losses(logits: torch.Tensor, labels: torch.Tensor) -> SampleLosses:
    """Shifted causal-LM cross entropy, reduced per sample (padding and masked prompt tokens excluded)."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(logits.device)
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    mask = shift_labels != IGNORE_INDEX
    return _from_token_losses(token_loss * mask, mask)


# ---- how a model's losses are computed ---------------------------------------------------------------------
@dataclass(frozen=True)
class LossSettings:
    impl: str = "auto"
    """auto | plain | chunked | liger (see the module docstring)."""
    chunk_size: int | None = None
    """Tokens per chunk through the LM head (chunked); None: `auto_chunk_size` of the head."""

    def __post_init__(self) -> None:
        if self.impl not in LOSS_IMPLS:
            raise ValueError(f"trainer.loss_impl={self.impl!r} is unknown; choose one of {LOSS_IMPLS}.")
        if self.chunk_size is not None and self.chunk_size <= 0:
            raise ValueError(f"trainer.loss_chunk_size must be > 0 or null, got {self.chunk_size}.")


CHUNK_LOGITS = 1 << 25
"""Logit entries of one automatic chunk (128 MiB in float32): 256 tokens at a 128k vocabulary, 1024 at 32k."""


def auto_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so one chunk's logits hold about CHUNK_LOGITS entries, a power of two in [64, 8192]
    (measured: at a 128k vocabulary 256-token chunks were faster than 1024,
    experiments/benchmarks/chunked_loss)."""
    tokens = max(1, CHUNK_LOGITS // max(1, vocab_size))
    return int(min(8192, max(64, 1 << (tokens.bit_length() - 1))))


_DEFAULT = [LossSettings()]


def configure_losses(settings: LossSettings) -> None:
    """The settings every forward of this process uses unless one passes its own (set by the training loop
    from trainer.loss_impl / trainer.loss_chunk_size, so components' own scoring passes follow it too)."""
    _DEFAULT[0] = settings


def loss_settings() -> LossSettings:
    return _DEFAULT[0]


@dataclass
class HeadPath:
    """How one model's losses are computed: `kind` is plain | linear | module | liger."""

    kind: str
    reason: str = ""
    decoder: nn.Module | None = None
    head: nn.Module | None = None
    scale: float = 1.0
    softcap: float | None = None
    chunk_size: int = 1024
    """Tokens per chunk (trainer.loss_chunk_size, or sized from the vocabulary)."""

    def modules(self) -> tuple[nn.Module, nn.Module]:
        """(decoder, head) of a chunked path (the plain path has neither)."""
        if self.decoder is None or self.head is None:
            raise RuntimeError(f"the {self.kind} loss path has no decoder/head")
        return self.decoder, self.head


_PATHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def unwrap(model: nn.Module) -> Any:
    """The HF model under DDP/DeepSpeed/compile wrappers and a peft wrapper (LoRA layers stay injected).

    Typed `Any`: callers use it duck-typed (`config`, `get_decoder()`, ... checked with hasattr first)."""
    inner: Any = model
    if maybe_wrapped(model):
        from accelerate.utils import extract_model_from_parallel

        inner = extract_model_from_parallel(model, keep_torch_compile=False)
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    return inner


def _logit_transform(config) -> tuple[float, float | None]:
    """(scale, softcap) that HF heads apply after the matmul: Cohere's logit_scale (x), Granite's
    logits_scaling (/), Gemma-2/3's final_logit_softcapping."""
    scale = float(getattr(config, "logit_scale", None) or 1.0)
    granite = getattr(config, "logits_scaling", None)
    if granite:
        scale /= float(granite)
    cap = getattr(config, "final_logit_softcapping", None)
    return scale, (float(cap) if cap else None)


def _unsupported(inner: Any) -> str:
    """Why the chunked head cannot be used on this model ('' if it can)."""
    if not hasattr(inner, "get_output_embeddings") or not hasattr(inner, "get_decoder"):
        return f"{type(inner).__name__} has no get_output_embeddings()/get_decoder()"
    head = inner.get_output_embeddings()
    if head is None:
        return f"{type(inner).__name__} has no output embeddings"
    if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
        return f"{type(inner).__name__}.forward has no logits_to_keep argument"
    weight = getattr(head, "weight", None)
    if weight is not None and (hasattr(weight, "ds_id") or weight.numel() == 0):
        return "the LM head weight is partitioned (DeepSpeed ZeRO-3 / sharded)"
    return ""


def _resolve(model: nn.Module, settings: LossSettings, probe: dict[str, torch.Tensor]) -> HeadPath:
    if settings.impl == "plain":
        return HeadPath("plain", "trainer.loss_impl=plain")
    inner = unwrap(model)
    sharded = any(
        "FullyShardedDataParallel" in type(m).__name__ or type(m).__name__.startswith("FSDP")
        for m in model.modules()
    )
    why = (
        "the model is sharded by FSDP (its weights exist only inside the wrapped forward)"
        if sharded
        else _unsupported(inner)
    )
    if not why:
        head = inner.get_output_embeddings()
        scale, softcap = _logit_transform(inner.config)
        kind = "linear" if type(head) is nn.Linear else "module"
        if settings.impl == "liger":
            why = _liger_unavailable(head)
            kind = "liger"
        path = HeadPath(kind, decoder=inner.get_decoder(), head=head, scale=scale, softcap=softcap)
        try:
            why = why or _probe_mismatch(inner, path, probe)
        except Exception as exc:  # noqa: BLE001 - a probe that cannot run means: do not use this path
            why = f"the probe forward through decoder + head failed ({type(exc).__name__}: {exc})"
    if why:
        if settings.impl != "auto":
            raise RuntimeError(
                f"trainer.loss_impl={settings.impl} cannot be used: {why}. Use trainer.loss_impl=auto "
                "(falls back to the plain loss) or plain."
            )
        logger.info(f"per-sample losses: plain full-logit path ({why})")
        return HeadPath("plain", why)
    vocab = int(getattr(path.head, "out_features", 0) or inner.config.vocab_size)
    path.chunk_size = settings.chunk_size or auto_chunk_size(vocab)
    logger.info(f"per-sample losses: {path.kind} head ({settings.impl}, chunks of {path.chunk_size} tokens)")
    return path


def head_path(model: nn.Module, settings: LossSettings, probe: dict[str, torch.Tensor]) -> HeadPath:
    """The path of `model` under `settings`, decided (and probed) once per model."""
    key = (settings.impl, settings.chunk_size)
    cache = _PATHS.setdefault(model, {})
    if key not in cache:
        cache[key] = _resolve(model, settings, probe)
    return cache[key]


@contextmanager
def _capture_hidden(decoder: nn.Module):
    """Holds the decoder's final hidden states (B, T, H) of the next forward in `box['h']`."""
    box: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        box["h"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    handle = decoder.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def _head_losses(path: HeadPath, hidden: torch.Tensor, labels: torch.Tensor, chunk_size: int) -> torch.Tensor:
    _, head = path.modules()
    if path.kind == "linear" and isinstance(head, nn.Linear):  # (linear: the head's type is nn.Linear)
        return chunked_linear_cross_entropy(
            hidden,
            head.weight,
            head.bias,
            labels,
            chunk_size=chunk_size,
            scale=path.scale,
            softcap=path.softcap,
            ignore_index=IGNORE_INDEX,
        )
    if path.kind == "liger" and isinstance(head, nn.Linear):  # (liger refuses any other head)
        return _liger_losses(hidden, head.weight, head.bias, labels, path.softcap)
    return checkpointed_module_cross_entropy(
        hidden,
        head,
        labels,
        chunk_size=chunk_size,
        scale=path.scale,
        softcap=path.softcap,
        ignore_index=IGNORE_INDEX,
    )


def _lean_forward(model: nn.Module, path: HeadPath, inputs: dict, labels, chunk_size: int) -> SampleLosses:
    with _capture_hidden(path.modules()[0]) as box:
        model(**inputs, logits_to_keep=1)
    hidden = box["h"][:, :-1]
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    flat_mask = mask.reshape(-1)
    rows = flat_mask.nonzero().squeeze(1)
    picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)  # supervised tokens only
    losses = _head_losses(path, picked, shift_labels.reshape(-1).index_select(0, rows), chunk_size)
    token_loss = losses.new_zeros(flat_mask.shape[0]).index_put((rows,), losses).view(mask.shape)
    return _from_token_losses(token_loss, mask)


def _probe_mismatch(inner: Any, path: HeadPath, probe: dict[str, torch.Tensor]) -> str:
    """'' if decoder + head (+ scale/cap) reproduce `model(...).logits` on the first row's first 16 tokens."""
    from dataflex.utils.modes import eval_mode

    ids = probe["input_ids"][:1, :16]
    mask = probe["attention_mask"][:1, :16] if probe.get("attention_mask") is not None else None
    decoder, head = path.modules()
    with torch.no_grad(), eval_mode(inner):
        with _capture_hidden(decoder) as box:
            reference = inner(input_ids=ids, attention_mask=mask).logits.float()
        hidden = box.get("h")
        if hidden is None or hidden.shape[:2] != ids.shape:
            return f"{type(decoder).__name__} did not return the (B, T, H) hidden states"
        z = head(hidden).float() * path.scale
        if path.softcap is not None:
            z = torch.tanh(z / path.softcap) * path.softcap
    if z.shape != reference.shape:
        return f"the head gives logits of shape {tuple(z.shape)}, the model {tuple(reference.shape)}"
    diff = float((z - reference).abs().max())
    tol = (
        1e-4 * max(1.0, float(reference.abs().max()))
        if reference.dtype == torch.float32 and hidden.dtype == torch.float32
        else 2e-2 * max(1.0, float(reference.abs().max()))
    )
    if diff > tol:
        return (
            f"decoder + head do not reproduce {type(inner).__name__}(...).logits "
            f"(max difference {diff:.3g}); "
            "the model transforms its logits in a way the chunked loss does not know"
        )
    return ""


# ---- liger (CUDA) ------------------------------------------------------------------------------------------
_LIGER_OK: list[str | None] = [None]


def _liger_unavailable(head: nn.Module) -> str:
    if not torch.cuda.is_available():
        return "liger-kernel needs a CUDA GPU"
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        return "liger-kernel is not installed (pip install liger-kernel)"
    if type(head) is not nn.Linear:
        return f"liger needs a plain nn.Linear head, got {type(head).__name__}"
    verdict = _LIGER_OK[0]
    if verdict is None:
        verdict = _LIGER_OK[0] = liger_weighting_error(_liger_losses, torch.device("cuda"))
    return verdict


def _liger_losses(hidden, weight, bias, labels, softcap):
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    out = liger_fused_linear_cross_entropy(
        hidden, weight, labels, bias=bias, ignore_index=IGNORE_INDEX, reduction="none", softcap=softcap
    )
    return (out[0] if isinstance(out, tuple) else out).float()


def liger_weighting_error(losses_fn, device, dtype=torch.float32) -> str:
    """'' if `losses_fn(hidden, weight, bias, labels, softcap)` back-propagates per-token weights exactly
    (checked against the chunked reference on random numbers); else why not. Old liger-kernel releases scale
    the summed weight gradient by the upstream gradient, which silently drops per-sample weights."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    h = torch.randn(12, 16, generator=gen).to(device, dtype)
    w = torch.randn(40, 16, generator=gen).to(device, dtype)
    y = torch.randint(0, 40, (12,), generator=gen).to(device)
    y[3] = IGNORE_INDEX
    weights = torch.rand(12, generator=gen).to(device) + 0.5
    grads = []
    for fn in (losses_fn, lambda *a: chunked_linear_cross_entropy(a[0], a[1], a[2], a[3], chunk_size=5)):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        try:
            (fn(hh, ww, None, y, None).float() * weights).sum().backward()
        except Exception as exc:  # noqa: BLE001 - any failure means: do not use it
            return f"liger per-token losses failed ({type(exc).__name__}: {exc})"
        if hh.grad is None or ww.grad is None:
            return "liger per-token losses did not back-propagate into the hidden states and the weight"
        grads.append((hh.grad.float(), ww.grad.float()))
    (ha, wa), (hb, wb) = grads
    if not (torch.allclose(ha, hb, rtol=1e-3, atol=1e-4) and torch.allclose(wa, wb, rtol=1e-3, atol=1e-4)):
        return (
            "this liger-kernel's fused linear cross entropy does not back-propagate per-token weights "
            "exactly (it would silently train an unweighted loss); upgrade liger-kernel"
        )
    return ""


# ---- the entry point ---------------------------------------------------------------------------------------
def model_losses(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    device,
    settings: LossSettings | None = None,
    **forward_kwargs,
) -> SampleLosses:
    """Per-sample losses of `batch` (input_ids, labels and, if present, attention_mask) under `model`, by the
    configured path; `forward_kwargs` go to the model's forward (e.g. packed rows' position_ids)."""
    settings = settings or loss_settings()
    inputs = {"input_ids": batch["input_ids"].to(device), **forward_kwargs}
    if batch.get("attention_mask") is not None:
        inputs["attention_mask"] = batch["attention_mask"].to(device)
    labels = batch["labels"].to(device)
    path = head_path(model, settings, inputs)
    if path.kind == "plain":
        return per_sample_losses(model(**inputs).logits, labels)
    return _lean_forward(model, path, inputs, labels, path.chunk_size)
