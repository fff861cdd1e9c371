"""`component=rho1`: Selective Language Modeling of Lin et al., "Rho-1: Not All Tokens Are What You Need"
(NeurIPS 2024). Token level: each supervised token's excess loss is
    score_t = loss_model(t) - loss_reference(t),
the top `ratio` (the paper's k%) of the global batch's tokens by score are kept and the loss is the mean
over the kept tokens, L = (1 / K) sum_{t in top-K} loss_model(t), K = round(ratio * T). The selection is a
stop-gradient mask, as in the paper. With ratio = 1 this is the plain token-mean loss.

The reference model (a local HF folder, same tokenizer; the paper trains it on high-quality data) is
frozen and scored on this rank's micro-batches; scores are all-gathered so the top-K is global. Two-step
recipe on the embedded data: train a reference on the target domain with `trainer=static`, then pass its
`final_model` as `component.reference_model`.

Schedule: token selection applies from the first step (`component.warmup_step=0`, the paper: SLM is the
training objective throughout, there is no plain-loss phase). It overrides trainer.warmup_step (whose
default, 20, suits the sample weighters); `component.warmup_step=null` follows trainer.warmup_step.
"""

from __future__ import annotations

from typing import Any

import torch

from dataflex.config.component.weight import Rho1WeighterConfig
from dataflex.core.registry import register_weighter
from dataflex.train.distributed import all_gather_cat
from dataflex.train.signals.losses import model_losses
from dataflex.train.weighter.base_weighter import Weighter


def rho1_selection(losses: torch.Tensor, reference: torch.Tensor, ratio: float) -> torch.Tensor:
    """0/1 mask (T,) of the top round(ratio*T) tokens by excess loss (at least one token)."""
    with torch.no_grad():
        k = max(1, int(round(ratio * losses.numel())))
        excess = losses.detach().double() - reference.double()
        mask = torch.zeros_like(losses)
        mask[torch.topk(excess, k, sorted=False).indices] = 1.0
        return mask


def load_reference(path: str, dtype: str, device: torch.device):
    from transformers import AutoModelForCausalLM

    from dataflex.models.hf import DTYPES, check_model_source

    check_model_source(path, key="component.reference_model")
    if dtype not in DTYPES or dtype == "auto":
        raise ValueError(f"component.reference_dtype={dtype!r}; choose float32, bfloat16 or float16.")
    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


@register_weighter("rho1")
class Rho1Weighter(Weighter):
    level = "token"
    Config = Rho1WeighterConfig

    def __init__(self, config: Rho1WeighterConfig | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = c = config or Rho1WeighterConfig()
        self.reference = load_reference(str(c.reference_model), c.reference_dtype, self.device)
        vocab = self.reference.get_output_embeddings().weight.shape[0]
        if self.tokenizer is not None and vocab < len(self.tokenizer):
            raise ValueError(
                f"component.reference_model={c.reference_model} has a {vocab}-token vocabulary but the "
                f"training tokenizer has {len(self.tokenizer)}; the reference must share the tokenizer."
            )
        self.last_excess_mean = float("nan")

    def reference_losses(self, micro_batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """This rank's reference token losses, in the order of the trainer's units (micro-batch, row,
        position; see DynamicWeightTrainer._units); forward only, by the memory-lean loss path (no B x T x V
        logits)."""
        out = []
        with torch.inference_mode():
            for mb in micro_batches:
                losses = model_losses(self.reference, mb, self.device)
                if losses.token_loss is None or losses.token_mask is None:
                    raise RuntimeError("Rho-1 needs the reference model's per-token losses")
                out.append(losses.token_loss[losses.token_mask].float())
        return torch.cat(out).clone() if out else torch.zeros(0, device=self.device)

    def get_weighted_loss(
        self, losses: torch.Tensor, *, ctx: Any = None, model=None, inputs=None
    ) -> torch.Tensor:
        reference = all_gather_cat(self.reference_losses(inputs["micro_batches"])).cpu()
        if reference.shape != losses.shape:
            raise ValueError(
                f"rho1: the reference model scored {reference.numel()} tokens but the batch has "
                f"{losses.numel()}; does component.reference_model use the training tokenizer?"
            )
        mask = rho1_selection(losses, reference, self.config.ratio)
        self.last_excess_mean = float((losses.detach() - reference)[mask.bool()].mean())
        return (mask * losses).sum() / mask.sum()

    def metrics(self) -> dict[str, float]:
        return {"selected_excess_mean": self.last_excess_mean}
