"""Shared helpers of the dynamic_mix tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dataflex.train.mixer.base_mixer import DomainStats, Mixer, MixtureManager

from helpers import small_trainer

NAMES = ["greet", "arith", "reverse", "noise", "target"]

# The spec's custom mixer, verbatim ("How to Add Custom Mixer in DataFlex", step 1), as a user package: its
# relative `from .base_mixer import Mixer` resolves to the package's base_mixer, which re-exports DataFlex's.
SPEC_RANDOM_MIXER = '''from dataflex.core.registry import register_mixer
from dataflex.utils.logging import logger
from .base_mixer import Mixer

import numpy as np

@register_mixer("random")
class RandomMixer(Mixer):
    def __init__(self, mixture_manager, seed):
        super().__init__(mixture_manager)
        self.seed = seed
    
    def mix(self, model, step_id: int, **kwargs) -> np.ndarray:
        """
        Randomly generate a ratio vector.

        Returns:
            np.ndarray: Normalized ratio array with length equal to the number of sources.
        """
        k = len(self.mixture_manager.names)
        np.random.seed(self.seed)
        raw = np.random.random(k)
        probs = raw / raw.sum()  # Normalize
        logger.info(f"[RandomMixer] Step {step_id} Generated proportions: {probs}")

        return probs
'''  # noqa: W293 (verbatim, trailing whitespace included)


def write_user_package(root: Path, name: str = "user_mixers") -> Path:
    pkg = root / name
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "base_mixer.py").write_text("from dataflex.train.mixer.base_mixer import Mixer  # noqa: F401\n")
    (pkg / "random_mixer.py").write_text(SPEC_RANDOM_MIXER)
    return pkg


class Plan:
    """What the trainer's sampler is to a MixtureManager: the owner of the proportions in force."""

    def __init__(self, proportions) -> None:
        self.proportions = np.asarray(proportions, dtype=np.float64)


def in_force(mixture_manager: MixtureManager, proportions) -> None:
    """Makes `proportions` the ones in force, as the trainer's sampler does after an update."""
    mixture_manager.attach(Plan(proportions))


def manager(proportions=None, names=NAMES) -> MixtureManager:
    k = len(names)
    return MixtureManager(names, [100] * k, proportions if proportions is not None else [1.0 / k] * k)


def stats(step: int, losses, present=None, tokens: float = 10.0) -> DomainStats:
    """Per-domain stats with token-mean loss `losses[i]` (absent domains: present[i] False)."""
    losses = np.asarray(losses, dtype=float)
    present = np.ones(len(losses), bool) if present is None else np.asarray(present, bool)
    count = np.where(present, tokens, 0.0)
    return DomainStats(
        step=step, token_sum=losses * count, token_count=count, sample_count=present.astype(np.int64) * 2
    )


def mix_trainer(run_dir, *, component=None, eval_data=False, **args):
    """A real DynamicMixTrainer (2-layer 32-dim LLaMA, 32 rows per domain, global batch 8)."""
    from omegaconf import OmegaConf

    from dataflex.train.trainer.dynamic_mix import DynamicMixTrainer

    cfg = None if component is None else OmegaConf.create(component)
    return small_trainer(
        DynamicMixTrainer, run_dir, eval_data=eval_data, component=cfg, **{"max_steps": 0, **args}
    )


def history(run_dir) -> dict:
    return json.loads((Path(run_dir) / "mixture_history.json").read_text())


class CyclingMixer(Mixer):
    """Test mixer (via component._target_): the k-th call puts all weight on domain k % K and logs the
    call."""

    def __init__(self, mixture_manager):
        super().__init__(mixture_manager)
        self.calls: list[int] = []

    def mix(self, model, step_id, **kwargs):
        p = np.zeros(len(self.mixture_manager.names))
        p[len(self.calls) % len(p)] = 1.0
        self.calls.append(step_id)
        return p


def save_reference(path, seed: int = 1):
    """A small LLaMA saved as a reference model (same vocabulary as the tiny trainers)."""
    from dataflex.models.tiny import build_tiny_model

    from helpers import SMALL_MODEL

    bundle = build_tiny_model(**SMALL_MODEL, seed=seed)
    bundle.model.save_pretrained(path)
    bundle.tokenizer.save_pretrained(path)
    return path


def distributed_histories(run_dir: str, reference: str, grad_accum: int) -> dict:
    """Runs an ODM and a DoReMi trainer (per-device batch 8 / world size / grad_accum, so the global batch is
    8 for any world size) and returns the decisions every rank made."""
    import os

    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    per_device = 8 // world // grad_accum
    common = dict(per_device_train_batch_size=per_device, gradient_accumulation_steps=grad_accum)
    odm = mix_trainer(
        f"{run_dir}/odm",
        component={"_target_": "dataflex.train.mixer.odm.OdmMixer"},
        warmup_step=0,
        update_step=1,
        update_times=12,
        **common,
    )
    odm.train()
    doremi = mix_trainer(
        f"{run_dir}/doremi",
        component={
            "_target_": "dataflex.train.mixer.doremi.DoReMiMixer",
            "reference_model_path": reference,
            "eta": 5.0,
        },
        warmup_step=0,
        update_step=1,
        update_times=4,
        **common,
    )
    doremi.train()
    return {
        "rank": rank,
        "odm": [u["proportions"] for u in odm.history.updates],
        "odm_counts": odm.history.trained_counts,
        "doremi_alpha": doremi.mixer.average_alpha.tolist(),
    }
