"""`component=dynamic_moe`: dynamic data mixing for MoE models (Zhu et al., 2025, "Dynamic Data Mixing
Maximizes Instruction Tuning for Mixture-of-Experts", Algorithm 1).

At each update, every domain gets a representation from the model's own routing: the router's top-k
choices over the supervised and prompt tokens of a fixed set of that domain's rows, counted per expert in
the last MoE layer (`router_layers=last`, the authors' code; `all` sums the layers), then L1-normalised
(the "gate load" O_i). A domain whose routing differs from the
others (large mean distance to them) is less redundant and gains weight:

    Delta_i = mean_j dist(O_i, O_j)            (dist = L2, or 1 - cosine; j includes i itself)
    w       = softmax(log w_prev + eta * Delta)
    w       = (1 - c) w + c / k,  renormalised

Defaults eta=10, c=0.05 follow the authors' code. `freeze_gate` freezes exactly the router modules
(the top-k routers over the experts), not the `gate_proj` of SwiGLU MLPs nor the shared-expert gate; it
defaults to true because the authors' dynamic-sampling runs freeze the gates (the loads then measure a
fixed routing of a changing representation, not a router chasing the mixture). Cadence: the authors update
the weights at every evaluation; here the trainer's schedule decides (set trainer.update_step to your
trainer.eval_steps to match, as conf/components/dynamic_mix/dynamic_moe.yaml's example does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dataflex.config.component.mix import DynamicMoeMixerConfig
from dataflex.core.registry import register_mixer
from dataflex.data.processor import collate
from dataflex.train.distributed import all_reduce_sum
from dataflex.utils.logging import logger
from dataflex.utils.modes import eval_mode

from .base_mixer import Mixer, MixtureManager, softmax


def router_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The routers of a MoE model: modules whose class is a router (HF `*Router`, e.g. Qwen2MoeTopKRouter,
    MixtralTopKRouter) or a Linear named `gate`/`router` scoring exactly `num_experts` experts."""
    inner = getattr(model, "module", model)
    config = getattr(inner, "config", None)
    num_experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    found = []
    for name, module in inner.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        is_router_class = type(module).__name__.endswith("Router")
        is_router_linear = (
            isinstance(module, nn.Linear)
            and leaf in ("gate", "router")
            and num_experts is not None
            and module.out_features == num_experts
        )
        if is_router_class or is_router_linear:
            found.append((name, module))
    return found


def freeze_routers(model: nn.Module) -> list[str]:
    """Sets requires_grad=False on every router parameter; returns the frozen parameter names."""
    frozen = []
    for name, module in router_modules(model):
        for pname, param in module.named_parameters():
            param.requires_grad_(False)
            frozen.append(f"{name}.{pname}")
    return frozen


def redundancy_delta(loads: np.ndarray, distance: str = "l2") -> np.ndarray:
    """Delta_i = mean over j (including i) of the distance between domains' normalised loads."""
    loads = np.asarray(loads, dtype=np.float64)
    if distance == "l2":
        dist = np.linalg.norm(loads[:, None, :] - loads[None, :, :], axis=2)
    elif distance == "cos":
        unit = loads / np.maximum(np.linalg.norm(loads, axis=1, keepdims=True), 1e-12)
        dist = 1.0 - unit @ unit.T
    else:
        raise ValueError(f"component.distance={distance!r} is unknown; choose l2 or cos.")
    return dist.mean(axis=1)


def dynamic_moe_update(weights: np.ndarray, delta: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    w = softmax(np.log(np.asarray(weights, dtype=np.float64)) + eta * np.asarray(delta, dtype=np.float64))
    w = (1.0 - smoothing) * w + smoothing / len(w)
    return w / w.sum()


@register_mixer("dynamic_moe")
class DynamicMoeMixer(Mixer):
    Config = DynamicMoeMixerConfig

    def __init__(
        self,
        mixture_manager: MixtureManager,
        model=None,
        train_data=None,
        eval_data=None,
        pad_token_id: int = 0,
        accelerator=None,
        rank: int = 0,
        world_size: int = 1,
        config: DynamicMoeMixerConfig | None = None,
    ) -> None:
        super().__init__(mixture_manager)
        self.config = c = config or DynamicMoeMixerConfig()
        if model is None or not router_modules(model):
            name = type(getattr(model, "module", model)).__name__
            raise ValueError(
                f"component=dynamic_moe needs a Mixture-of-Experts model with router modules (e.g. "
                f"model=tiny_moe, or an HF Mixtral/Qwen-MoE); {name} has none."
            )
        data = eval_data if c.source == "eval" else train_data
        if data is None:
            raise ValueError(
                "component.source=eval but the data has no eval split; add eval files to the dataset "
                "or set component.source=train."
            )
        missing = [n for n in mixture_manager.names if n not in data.domain_names]
        if missing:
            raise ValueError(f"component.source={c.source}: domain(s) {missing} have no rows in that split.")
        self.pad_token_id = int(pad_token_id)
        self._data, self._rank, self._world = data, rank, world_size
        self._device = accelerator.device if accelerator is not None else torch.device("cpu")
        # Fixed rows per domain (the first N of each), sharded over ranks, loads summed across ranks.
        self._rows = [
            np.asarray(data.domain_rows(data.domain_names.index(n)))[: c.samples_per_domain]
            for n in mixture_manager.names
        ]
        self.last_loads: np.ndarray | None = None
        self.last_delta: np.ndarray | None = None
        if c.freeze_gate:
            frozen = freeze_routers(model)
            logger.info(f"dynamic_moe: froze {len(frozen)} router parameters: {frozen}")

    @torch.no_grad()
    def router_loads(self, model) -> np.ndarray:
        """(K, E) per-domain expert loads (top-k choices over real tokens of the last MoE layer, or summed
        over all layers), L1-normalised."""
        inner = getattr(model, "module", model)
        # the unwrapped module: ranks may run different numbers of forwards (no DDP collectives)
        with eval_mode(inner):
            totals = [self._domain_load(inner, rows) for rows in self._rows]
        loads = all_reduce_sum(torch.stack(totals)).cpu().numpy()
        return loads / np.maximum(loads.sum(axis=1, keepdims=True), 1e-12)

    def _domain_load(self, inner, rows) -> torch.Tensor:
        """(E,) top-k expert choices over the real tokens of this rank's share of one domain's rows."""
        top_k = int(inner.config.num_experts_per_tok)
        load = torch.zeros(_num_experts(inner), dtype=torch.float64, device=self._device)
        mine = rows[self._rank :: self._world]
        for start in range(0, len(mine), self.config.batch_size):
            batch = collate(
                [self._data[int(i)] for i in mine[start : start + self.config.batch_size]], self.pad_token_id
            )
            out = inner(
                input_ids=batch["input_ids"].to(self._device),
                attention_mask=batch["attention_mask"].to(self._device),
                output_router_logits=True,
            )
            real = batch["attention_mask"].reshape(-1).to(self._device).bool()
            layers = out.router_logits if self.config.router_layers == "all" else out.router_logits[-1:]
            for logits in layers:
                chosen = logits[real].topk(top_k, dim=-1).indices.reshape(-1)
                load += torch.bincount(chosen, minlength=load.shape[0]).to(torch.float64)
        return load

    def mix(self, model, step_id: int, **kwargs: Any) -> np.ndarray:
        self.last_loads = self.router_loads(model)
        self.last_delta = redundancy_delta(self.last_loads, self.config.distance)
        return dynamic_moe_update(
            self.mixture_manager.proportions, self.last_delta, self.config.eta, self.config.smoothing
        )

    def metrics(self) -> dict[str, float]:
        if self.last_delta is None:
            return {}
        return {
            f"dynamic_moe/delta/{n}": float(d) for n, d in zip(self.mixture_manager.names, self.last_delta)
        }


def _num_experts(model) -> int:
    config = model.config
    return int(getattr(config, "num_experts", None) or config.num_local_experts)
