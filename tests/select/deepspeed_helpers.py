"""Per-sample gradient features of the tiny model computed the plain way (one process) or under DeepSpeed ZeRO
(inside each rank of `run_distributed`), for the ZeRO parity test."""

from __future__ import annotations

import os

import numpy as np
import torch
from select_helpers import make_setup

from dataflex.train.selector.scoring import GradientFeatureSpec, gradient_feature_rows
from dataflex.train.signals.gradients import AdamPreconditioner, collect_gradient_features, gradient_features
from dataflex.train.signals.kronecker import KroneckerProjector
from dataflex.train.signals.losses import per_sample_losses
from dataflex.train.signals.projection import RandomProjector

TRAIN = list(range(0, 96, 12))  # one optimizer step on these 8 items (4 per rank under 2 processes)
IDS = [0, 21, 42, 63, 84, 99, 5]  # featurised items: several lengths and domains, so padding is exercised
PROJ_DIM = 64


def _mean_loss(model, setup, ids) -> torch.Tensor:
    batch = setup.batch(ids)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return per_sample_losses(logits, batch["labels"]).mean.mean()


def _features(
    model, setup, optimizer, num_params: int, rank: int = 0, world: int = 1
) -> dict[str, torch.Tensor]:
    """Plain gradients and Adam-preconditioned ones, full and projected, and the LESS rows as the selectors
    compute them: sharded over the ranks, one item per batch, so the ranks' shards (4 and 3 items) take
    different numbers of forwards unless they run in lockstep."""
    model.eval()
    projector = RandomProjector(num_params, PROJ_DIM, seed=1)
    ctx = setup.context(world_size=world, rank=rank, batch_size=1, lockstep=world > 1)
    spec = GradientFeatureSpec(proj_dim=PROJ_DIM, seed=1)
    return {
        "less_rows": gradient_feature_rows(
            model, setup.train, np.asarray(IDS), ctx, spec, optimizer=optimizer, precondition=True
        ),
        "sgd": gradient_features(model, setup.batch(IDS)),
        "adam": gradient_features(model, setup.batch(IDS), preconditioner=AdamPreconditioner(optimizer)),
        "kronecker": gradient_features(
            model, setup.batch(IDS), projector=KroneckerProjector(model, 512, seed=1)
        ),
        "projected": collect_gradient_features(
            model,
            setup.train,
            IDS,
            batch_size=4,
            pad_token_id=setup.pad,
            projector=projector,
            preconditioner=AdamPreconditioner(optimizer),
        ),
    }


def plain_features() -> dict[str, torch.Tensor]:
    """One process, no DeepSpeed: one AdamW step with lr=0 (moments set, weights unchanged), then features."""
    s = make_setup("full", seed=3)
    opt = torch.optim.AdamW(s.model.parameters(), lr=0.0, weight_decay=0.0)
    s.model.train()
    _mean_loss(s.model, s, TRAIN).backward()
    opt.step()
    return _features(s.model, s, opt, sum(p.numel() for p in s.model.parameters()))


def zero_features(stage: int) -> dict:
    """Run in every rank: the same under DeepSpeed ZeRO-`stage` (each rank trains its half of TRAIN)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    from dataflex.train.signals.gradients import num_trainable

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    s = make_setup("full", seed=3)
    opt = torch.optim.AdamW(s.model.parameters(), lr=0.0, weight_decay=0.0)
    config = {
        "train_micro_batch_size_per_gpu": len(TRAIN) // world,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 0.0,
        "zero_allow_untested_optimizer": True,
        # threshold 0: no parameter is kept whole (by default small ones are), so all of them are sharded
        "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
    }
    engine, ds_opt, _, _ = deepspeed.initialize(model=s.model, optimizer=opt, config=config)
    engine.train()
    share = len(TRAIN) // world
    engine.backward(_mean_loss(engine, s, TRAIN[rank * share : (rank + 1) * share]))
    engine.step()
    # ZeRO-3: every parameter is an empty shard when the features start (outside a forward)
    sharded = all(p.numel() == 0 for p in engine.module.parameters())
    return {
        "sharded": sharded,
        **_features(engine.module, s, ds_opt, num_trainable(engine.module), rank, world),
    }
