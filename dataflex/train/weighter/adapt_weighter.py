"""`component=adapt`: similarity-based online reweighting in the spirit of ADAPT (Zhao et al., "Rethinking
Data Curation in LLM Training: Online Reweighting Offers Better Generalization than Offline Methods").

Each sample's weight follows its semantic similarity to an anchor set (rows of the eval split, e.g. the
target domain), measured in the *current* model's embedding space, so the emphasis moves as the model learns:
  s_i = mean_j cos(e_i, a_j)   (or max_j with aggregate=max; embeddings are L2-normalised mean-pooled last
                                hidden states, `dataflex.train.signals.sample_embeddings`)
  u_i = clip(sigmoid((s_i - c) / tau), clip_min, clip_max)
  w_i = u_i / sum_j u_j        over the global batch (all micro-batches and ranks).
Weights are detached (stop-gradient): only sum_i w_i * loss_i is differentiated.

c = 0 with `center=false` is the plain sigmoid(similarity / tau). The default `center=true` uses the global
batch's mean similarity as c: LM embeddings are anisotropic (on the embedded tiny model every cosine is
about 0.86 +- 0.06), so the raw sigmoid saturates to uniform weights for any tau small enough to matter;
centring makes tau act on the spread of similarities. This is our choice, not taken from the paper.

Against the original DataFlex ADAPT port, each an option (`normalize`, `pooling`, `tau`):
- `normalize=true` (default, ours): w = u / sum u over the global batch, so the weighted loss stays on the
  plain loss's scale, uniform similarity gives exactly the plain loss, and accumulation/ranks cannot change
  the update. The port uses the unnormalised sigmoid as a per-sample learning rate: `normalize=false` gives
  L = (1/N) sum_i u_i l_i (every weight in (0, 1): the effective step size shrinks with the weights).
- `pooling=mean` (default) vs the port's `position_weighted` (k-th real token weighs k, SGPT-style); mean
  pooling is what every other DataFlex embedding signal uses (near, tsds), so one embedding space serves all.
- tau 0.05 with centring (default) vs the port's tau 1 on raw cosines: with cosines within ~0.06 of each other
  (anisotropic LM embeddings) sigmoid(s / 1) varies by ~1.5% across a batch, i.e. uniform weights.

Anchors are re-embedded every `refresh_interval` optimizer steps, once, on rank 0, and broadcast, so all
ranks weight with the same anchors; each rank embeds its own samples and the embeddings are all-gathered.
With `reuse_forward=true` (default) a sample's embedding is pooled from the last hidden state of the
training forward itself (a hook on the decoder's output, the LM head's input; identical to `sample_embeddings`
for models without dropout), so weighting costs no extra forward; `reuse_forward=false` runs
`sample_embeddings` on the batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dataflex.config.component.weight import AdaptWeighterConfig
from dataflex.core.registry import register_weighter
from dataflex.train.distributed import all_gather_cat, broadcast_object
from dataflex.train.signals.embeddings import pool_hidden, sample_embeddings
from dataflex.train.signals.losses import unwrap
from dataflex.train.weighter.base_weighter import Weighter


def adapt_weights(
    embeddings: torch.Tensor,
    anchors: torch.Tensor,
    tau: float,
    aggregate: str = "mean",
    clip_min: float | None = None,
    clip_max: float | None = None,
    center: bool = False,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, similarities) for L2-normalised `embeddings` (N, H) and `anchors` (M, H). normalize: the
    weights sum to 1; else u_i / N (the unnormalised sigmoid as a per-sample learning rate on the mean
    loss)."""
    with torch.no_grad():
        cos = embeddings.double() @ anchors.double().T
        sims = cos.mean(dim=1) if aggregate == "mean" else cos.max(dim=1).values
        u = torch.sigmoid((sims - sims.mean() if center else sims) / tau)
        if clip_min is not None or clip_max is not None:
            u = u.clamp(min=clip_min, max=clip_max)
        total = u.sum()
        if not total > 0:
            raise ValueError(
                "component=adapt: every sigmoid weight was clipped to 0; lower component.clip_min."
            )
        return (u / (total if normalize else len(u))).float(), sims.float()


@register_weighter("adapt")
class AdaptWeighter(Weighter):
    Config = AdaptWeighterConfig

    def __init__(self, config: AdaptWeighterConfig | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = c = config or AdaptWeighterConfig()
        domains = list(c.anchor_domains) if c.anchor_domains else None
        self.anchor_rows = self._anchor_rows(domains, c.max_anchors)
        self.anchors: torch.Tensor | None = None
        self.refreshed_at: int | None = None
        self.refreshes = 0
        self.last_similarity: torch.Tensor | None = None
        self._armed = False
        self._hidden: list[torch.Tensor] = []

    def _anchor_rows(self, domains: list[str] | None, max_anchors: int | None) -> np.ndarray:
        data = self.eval_data
        if data is None or len(data) == 0:
            raise ValueError(
                "component=adapt needs an anchor set, taken from the eval split of the data, and none "
                "was loaded: use a dataset with an eval split (the embedded default has one)."
            )
        names = list(data.domain_names)
        if domains is None:
            rows = np.arange(len(data))
        else:
            unknown = [d for d in domains if d not in names]
            if unknown:
                raise ValueError(
                    f"component.anchor_domains: {unknown} not in the eval split's domains {names}."
                )
            rows = np.sort(np.concatenate([data.domain_rows(names.index(d)) for d in domains]))
        if len(rows) == 0:
            raise ValueError(f"component=adapt: the eval split has no rows in anchor_domains={domains}.")
        if max_anchors is not None and len(rows) > max_anchors:
            rows = np.sort(np.random.default_rng(self.seed).choice(rows, size=max_anchors, replace=False))
        return rows

    def _refresh(self, model, step: int) -> None:
        """Anchor embeddings with the current model: computed once on rank 0, shared with every rank."""
        anchors = None
        rank = self.accelerator.process_index if self.accelerator is not None else 0
        if rank == 0:
            anchors = sample_embeddings(
                model,
                self.eval_data,
                self.anchor_rows,
                batch_size=self.config.embed_batch_size,
                pad_token_id=self.pad_id,
                device=self.device,
                pooling=self.config.pooling,
            )
        self.anchors = broadcast_object(anchors)
        self.refreshed_at = step
        self.refreshes += 1

    def due(self, step: int) -> bool:
        return (
            self.anchors is None
            or self.refreshed_at is None
            or step - self.refreshed_at >= self.config.refresh_interval
        )

    # ---- reusing the training forward -----------------------------------------------------------------
    def attach(self, model) -> None:
        """Hooks the decoder's final hidden states (the LM head's input on every position, also when the loss
        takes them through the chunked head, which runs the head module on the last position only)."""
        inner = unwrap(model)
        decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
        if self.config.reuse_forward:
            if decoder is None:
                raise ValueError(
                    "component.reuse_forward=true needs a model with get_decoder(); set "
                    "component.reuse_forward=false to embed the batch with a separate forward."
                )
            decoder.register_forward_hook(self._capture)

    def begin_step(self, step: int, weighted: bool) -> None:
        self._armed = weighted and self.config.reuse_forward
        self._hidden = []

    def _capture(self, module, args, output) -> None:
        if self._armed and module.training and torch.is_grad_enabled():
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            self._hidden.append(hidden.detach())

    def _pooled_from_forward(self, micro_batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        if len(self._hidden) != len(micro_batches):
            raise RuntimeError(
                f"adapt: captured {len(self._hidden)} hidden states for {len(micro_batches)} "
                "micro-batches; set component.reuse_forward=false for this model."
            )
        out = []
        for hidden, mb in zip(self._hidden, micro_batches):
            mask = mb["attention_mask"].to(hidden.device)
            if hidden.shape[:2] != mask.shape:
                raise RuntimeError(
                    "adapt: captured hidden states do not match the micro-batch; set "
                    "component.reuse_forward=false for this model."
                )
            out.append(
                torch.nn.functional.normalize(pool_hidden(hidden.float(), mask, self.config.pooling), dim=-1)
            )
        self._hidden = []
        return torch.cat(out)

    def get_weighted_loss(
        self, losses: torch.Tensor, *, ctx: Any = None, model=None, inputs=None
    ) -> torch.Tensor:
        if self.due(ctx.global_step):
            self._refresh(model, ctx.global_step)
        if self.config.reuse_forward:
            local = self._pooled_from_forward(inputs["micro_batches"])
        else:
            local = sample_embeddings(
                model,
                self.train_data,
                ctx.sample_ids[ctx.local_slice].tolist(),
                batch_size=self.config.embed_batch_size,
                pad_token_id=self.pad_id,
                device=self.device,
                pooling=self.config.pooling,
            )
        embeddings = all_gather_cat(local.to(self.device)).cpu()
        assert self.anchors is not None  # (refreshed above when missing)
        weights, sims = adapt_weights(
            embeddings,
            self.anchors,
            self.config.tau,
            self.config.aggregate,
            self.config.clip_min,
            self.config.clip_max,
            self.config.center,
            self.config.normalize,
        )
        self.last_similarity = sims
        return (weights.to(losses.dtype) * losses).sum()

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"anchor_refreshes": float(self.refreshes)}
        if self.last_similarity is not None:
            out["similarity_mean"] = float(self.last_similarity.mean())
            out["similarity_std"] = (
                float(self.last_similarity.std()) if self.last_similarity.numel() > 1 else 0.0
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "anchors": None if self.anchors is None else self.anchors.clone(),
            "refreshed_at": self.refreshed_at,
            "refreshes": self.refreshes,
            "anchor_rows": self.anchor_rows.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors = None if state["anchors"] is None else state["anchors"].clone()
        self.refreshed_at = state["refreshed_at"]
        self.refreshes = int(state.get("refreshes", 0))
        if "anchor_rows" in state:
            self.anchor_rows = np.asarray(state["anchor_rows"], dtype=np.int64)
