"""`component=doremi`: DoReMi step 2 (Xie et al., 2023, "DoReMi: Optimizing Data Mixtures Speeds Up
Language Model Pretraining", Algorithm 1): train a proxy model with group DRO against a reference model.

At every training step t (all of them, as the paper and its code: alpha does not wait for the trainer's
warmup_step / update_step, which only schedule `mix`, a no-op here), on the step's batch B (all
micro-batches of all ranks):

    lambda_i = sum_{tokens j of domain i in B} max(l_proxy(j) - l_ref(j), 0) / #tokens of domain i in B
    log alpha <- log alpha_{t-1} + eta * lambda ;  alpha <- softmax(log alpha)
    alpha_t  = (1 - c) alpha + c / k
    proxy loss (loss_normalization=alpha_tokens, default, the authors' code):
        sum_{tokens j in B} alpha_t[d(j)] l_proxy(j) / sum_{tokens j in B} alpha_t[d(j)]
    proxy loss (loss_normalization=domain_mean, the paper's Algorithm 1 as written):
        sum_i alpha_t[i] * (token-mean proxy loss of domain i in B)

The two forms agree when every domain has the same number of tokens in B; with unequal counts the code's
form weighs a domain by alpha_i x its tokens, the paper's by alpha_i alone. We default to the code's form
because the paper's results were produced with it. One difference remains: the authors normalise each
micro-batch by its own alpha-weighted token count (HF Trainer then averages the micro-batches); we
normalise by the whole global batch's, so gradient accumulation does not change the objective.

alpha_t is computed before the proxy's backward (the loop's `defer_backward` hook) and the alpha-weighted
loss is what is back-propagated (the original DataFlex computed the weights but never applied them; it
also only updated alpha on the mixer schedule: with the trainer defaults warmup_step=50 update_step=25,
alpha stayed uniform for 50 steps and changed at 10 of 300 steps). The batches themselves keep following the
trainer's mixture (the paper samples from the reference weights and reweights the loss). A domain absent from
a step's batch keeps its previous lambda, as in the authors' code. The running average of alpha_t over the
updates is DoReMi's output: it is written to `<run dir>/doremi_weights.json` (`{"domains", "proportions"}`),
which step 3 trains with (`trainer.mixture_proportions_file`). Defaults eta=1, c=1e-3 follow the paper's run
scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataflex.config.component.mix import DoReMiMixerConfig
from dataflex.core.registry import register_mixer
from dataflex.data.processor import IGNORE_INDEX
from dataflex.train.distributed import all_reduce_sum
from dataflex.train.signals.losses import model_losses, weighted_loss
from dataflex.utils.logging import logger

from .base_mixer import Mixer, MixtureManager, softmax


def doremi_update(alpha: np.ndarray, excess: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    """One group-DRO step: softmax(log alpha + eta * excess), then mixed with uniform by `smoothing`."""
    alpha = np.asarray(alpha, dtype=np.float64)
    new = softmax(np.log(alpha) + eta * np.asarray(excess, dtype=np.float64))
    return (1.0 - smoothing) * new + smoothing / len(alpha)


def alpha_sample_weights(
    alpha: np.ndarray,
    domain_ids: np.ndarray,
    reduction: str = "sample",
    domain_tokens: np.ndarray | None = None,
    normalization: str = "alpha_tokens",
) -> np.ndarray:
    """Each sample's DoReMi loss weight (by its domain d_i) relative to the plain mean loss of the batch.

    The two trainers that apply DoReMi's alpha average the batch's loss differently, so "relative to the plain
    mean" means two things (one helper, a parameter, rather than two formulas that drift apart):

    - reduction="sample" (trainer=pipeline): the loss is the mean of per-sample token-mean losses and every
      stage contributes ONE factor per sample to a product, so DoReMi's factor is
      alpha[d_i] / mean_j alpha[d_j] (mean 1 over the batch; uniform alpha gives 1.0 everywhere).
    - reduction="token" (dynamic_mix, DoReMi's own objective; the data ledger's weights): relative to the
      plain token mean of the global batch, with T_d = `domain_tokens` (the batch's supervised tokens of
      domain d) and T their sum: normalization=alpha_tokens: alpha[d] T / sum_d alpha_d T_d (uniform alpha:
      1.0); domain_mean: alpha[d] T / T_d.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    domains = np.asarray(domain_ids, dtype=np.int64)
    if reduction == "sample":
        per_sample = alpha[domains]
        return per_sample / per_sample.mean()
    if reduction != "token" or domain_tokens is None:
        raise ValueError(f"alpha_sample_weights: reduction={reduction!r} (token needs domain_tokens)")
    tokens = np.asarray(domain_tokens, dtype=np.float64)
    total = tokens.sum()
    if normalization == "alpha_tokens":
        per_domain = alpha * total / max(float((alpha * tokens).sum()), 1e-12)
    else:
        per_domain = alpha * total / np.maximum(tokens, 1.0)
    return per_domain[domains]


def load_reference_model(path: str, device, vocab_size: int | None = None):
    """The frozen reference model; a missing or unloadable folder is an error (never a silent fallback)."""
    folder = Path(path).expanduser()
    key = "component.reference_model_path"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{key}={path}: no such folder ({folder.resolve()}). Train the reference first "
            "(DoReMi step 1: `dataflex-run -m experiment=doremi_step1`) or point the key at a "
            "trained model folder."
        )
    try:
        if (folder / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(folder)).merge_and_unload()
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(folder))
    except Exception as err:  # noqa: BLE001 - any loader failure becomes one clear error
        raise RuntimeError(
            f"{key}={path}: could not load a causal LM from {folder.resolve()}: {err}"
        ) from err
    ref_vocab = model.get_output_embeddings().weight.shape[0]
    if vocab_size is not None and ref_vocab != vocab_size:
        raise ValueError(
            f"{key}={path}: the reference model has a vocabulary of {ref_vocab} tokens but the proxy "
            f"has {vocab_size}; both must use the same tokenizer."
        )
    model.requires_grad_(False)
    return model.to(device).eval()


@register_mixer("doremi")
class DoReMiMixer(Mixer):
    reweights_loss = True
    updates_every_step = True

    Config = DoReMiMixerConfig

    def __init__(
        self,
        mixture_manager: MixtureManager,
        config: DoReMiMixerConfig,
        model=None,
        accelerator=None,
        run_dir: str | None = None,
        is_main: bool = True,
    ) -> None:
        super().__init__(mixture_manager)
        self.loss_normalization = config.loss_normalization
        k = len(mixture_manager.names)
        self.eta, self.smoothing = float(config.eta), float(config.smoothing)
        self.alpha = np.full(k, 1.0 / k)
        self.average_alpha = np.zeros(k)
        self.num_updates = 0
        self.excess_loss = np.zeros(k)
        """lambda of the last update (kept for domains absent from a later batch)."""
        self.weights_path = Path(run_dir) / config.weights_file if run_dir is not None else None
        self._is_main = is_main
        device = accelerator.device if accelerator is not None else torch.device("cpu")
        vocab = _vocab_size(model)
        self._reference = load_reference_model(config.reference_model_path, device, vocab)
        self._domain_tokens: torch.Tensor | None = None
        self._normalizer: torch.Tensor | None = None
        logger.info(
            f"DoReMi: reference model from {config.reference_model_path}, eta={self.eta}, c={self.smoothing}"
        )

    # ---- the update (before the proxy's backward) ---------------------------------------------------
    def _reference_token_loss(self, batch: dict[str, torch.Tensor], device) -> torch.Tensor:
        """(B, T-1) per-token losses of the frozen reference (forward only, the memory-lean loss path)."""
        with torch.inference_mode():
            token_loss = model_losses(self._reference, batch, device).token_loss
        if token_loss is None:
            raise RuntimeError("DoReMi needs the reference model's per-token losses")
        return token_loss.clone()  # a normal tensor: it meets the proxy's losses outside inference mode

    def before_backward(self, all_losses, micro_batches, ctx, update: bool) -> None:
        k = len(self.alpha)
        device = all_losses[0].token_sum.device
        tokens = torch.zeros(k, dtype=torch.float64, device=device)
        excess = torch.zeros(k, dtype=torch.float64, device=device)
        for losses, batch in zip(all_losses, micro_batches):
            domains = batch["domain_ids"].to(device)
            tokens.index_add_(0, domains, losses.token_count.to(torch.float64))
            if update:
                mask = batch["labels"][:, 1:].to(device) != IGNORE_INDEX
                diff = (losses.token_loss.detach() - self._reference_token_loss(batch, device)).clamp(
                    min=0
                ) * mask
                excess.index_add_(0, domains, diff.sum(dim=1).to(torch.float64))
        totals = all_reduce_sum(torch.stack([tokens, excess])).cpu()
        self._domain_tokens = totals[0].to(device)
        if update:
            self.update(totals[1].numpy(), totals[0].numpy())
        alpha = torch.as_tensor(self.alpha, dtype=torch.float64, device=device)
        self._normalizer = (alpha * self._domain_tokens).sum()  # sum over the batch's tokens of alpha[d(j)]

    def update(self, excess_sum: np.ndarray, token_count: np.ndarray) -> np.ndarray:
        """lambda from the global per-domain sums, then the alpha step and the running average."""
        seen = (token_count > 0) & np.isfinite(excess_sum)  # a non-finite step leaves that domain's lambda
        self.excess_loss = np.where(seen, excess_sum / np.maximum(token_count, 1), self.excess_loss)
        self.alpha = doremi_update(self.alpha, self.excess_loss, self.eta, self.smoothing)
        self.num_updates += 1
        self.average_alpha += (self.alpha - self.average_alpha) / self.num_updates
        self._write_weights()
        return self.alpha

    def weighted_loss(self, losses, batch, ctx) -> torch.Tensor:
        """This micro-batch's share of the proxy loss over the global batch (see the module docstring):
        alpha_tokens: sum_j alpha[d(j)] l(j) / sum_j alpha[d(j)]; domain_mean: sum_i alpha_i * mean_i. Each
        sample's weight times its token-loss sum, through dynamic_weight's `weighted_loss`."""
        if self._domain_tokens is None or self._normalizer is None:
            raise RuntimeError(
                "DoReMiMixer.weighted_loss called before before_backward (defer_backward is off?)"
            )
        device, dtype = losses.token_sum.device, losses.token_sum.dtype
        domains = batch["domain_ids"].to(device)
        alpha = torch.as_tensor(self.alpha, dtype=dtype, device=device)
        if self.loss_normalization == "alpha_tokens":
            per_token = alpha[domains] / self._normalizer.clamp(min=1e-12).to(dtype)
        else:
            per_token = alpha[domains] / self._domain_tokens[domains].clamp(min=1).to(dtype)
        return weighted_loss(losses.token_sum, per_token, ctx.world_size)

    def sample_weights(self, domain_ids: np.ndarray) -> np.ndarray:
        """The weight of each sample (by its domain) in this step's proxy loss relative to the plain token
        mean of the global batch, for the data ledger (`alpha_sample_weights`, reduction=token)."""
        if self._domain_tokens is None:
            raise RuntimeError("DoReMiMixer.sample_weights called before before_backward")
        tokens = self._domain_tokens.detach().cpu().double().numpy()
        return alpha_sample_weights(
            self.alpha,
            domain_ids,
            reduction="token",
            domain_tokens=tokens,
            normalization=self.loss_normalization,
        )

    # ---- outputs ------------------------------------------------------------------------------------
    def mix(self, model, step_id: int, **kwargs: Any) -> np.ndarray:
        """DoReMi reweights the loss, not the sampling: the batches keep the proportions in force."""
        return self.mixture_manager.proportions

    def metrics(self) -> dict[str, float]:
        out = {}
        for i, name in enumerate(self.mixture_manager.names):
            out[f"doremi/alpha/{name}"] = float(self.alpha[i])
            out[f"doremi/average_alpha/{name}"] = float(self.average_alpha[i])
            out[f"doremi/excess_loss/{name}"] = float(self.excess_loss[i])
        return out

    def result(self) -> dict[str, Any]:
        names = self.mixture_manager.names
        avg = self.average_alpha if self.num_updates else self.alpha
        return {
            "domains": names,
            "proportions": [float(x) for x in avg / avg.sum()],
            "final_alpha": [float(x) for x in self.alpha],
            "num_updates": self.num_updates,
            "eta": self.eta,
            "smoothing": self.smoothing,
            "loss_normalization": self.loss_normalization,
        }

    def _write_weights(self) -> None:
        if self._is_main and self.weights_path is not None:
            self.weights_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.weights_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.result(), indent=2))
            tmp.replace(self.weights_path)

    def state_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha.tolist(),
            "average_alpha": self.average_alpha.tolist(),
            "num_updates": self.num_updates,
            "excess_loss": self.excess_loss.tolist(),
            "eta": self.eta,
            "smoothing": self.smoothing,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha = np.asarray(state["alpha"], dtype=np.float64)
        self.average_alpha = np.asarray(state["average_alpha"], dtype=np.float64)
        self.excess_loss = np.asarray(state["excess_loss"], dtype=np.float64)
        self.num_updates = int(state["num_updates"])
        self.eta, self.smoothing = float(state["eta"]), float(state["smoothing"])


def _vocab_size(model) -> int | None:
    if model is None:
        return None
    inner = getattr(model, "module", model)
    emb = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    return None if emb is None else int(emb.weight.shape[0])
