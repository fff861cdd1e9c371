"""The human-readable log lines of a run (console and `dataflex.log`), as HF Trainer prints them."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from dataflex.config.trainer import TrainingArguments


def train_line(step: int, total: int, metrics: dict[str, Any]) -> str:
    """`step 10/300 | loss 3.2145 | lr 2.98e-03 | 91.2 samples/s | epoch 0`"""
    return (
        f"step {step}/{total} | loss {metrics['loss']:.4f} | lr {metrics['lr']:.3e} | "
        f"{metrics['samples_per_s']:.1f} samples/s | epoch {metrics.get('epoch', 0):g}"
    )


def eval_line(step: int, metrics: dict[str, float]) -> str:
    """`eval step 100 | loss 2.3100 (ppl 10.07) | arith 1.1109 | greet 0.3120 | ...` (per-domain losses)."""
    domains = sorted(k.removeprefix("eval/loss/") for k in metrics if k.startswith("eval/loss/"))
    parts = [f"eval step {step} | loss {metrics['eval/loss']:.4f} (ppl {metrics['eval/ppl']:.2f})"]
    parts += [f"{d} {metrics[f'eval/loss/{d}']:.4f}" for d in domains]
    return " | ".join(parts)


def run_description(trainer) -> list[str]:
    """What was chosen, with its key parameters: the trainer's own schedule keys (those beyond the plain
    training arguments) and the component's config."""
    own = [
        f.name
        for f in fields(trainer.args)
        if f.name not in {g.name for g in fields(TrainingArguments)} and not f.name.startswith("_")
    ]
    args = trainer.args
    schedule = ", ".join(f"{k}={getattr(args, k)}" for k in own)
    lines = [
        f"trainer: {type(trainer).__name__}" + (f" ({schedule})" if schedule else ""),
        f"optimizer: {args.optim} lr={args.learning_rate:g} weight_decay={args.weight_decay:g} "
        f"scheduler={args.lr_scheduler_type}",
    ]
    component = trainer.component_config
    if component is not None and not _is_none_component(component):
        items = _items(component)
        target = items.pop("_target_", "")
        lines.append(
            f"component: {target.rsplit('.', 1)[-1] or '?'} ("
            + ", ".join(f"{k}={v}" for k, v in items.items() if not k.startswith("_"))
            + ")"
        )
    return lines


def _items(component) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(component, DictConfig):
        items = OmegaConf.to_container(component, resolve=True)
        assert isinstance(items, dict)  # (a DictConfig's container is a dict)
        return {str(k): v for k, v in items.items()}
    return dict(component) if isinstance(component, dict) else dict(vars(component))


def _is_none_component(component) -> bool:
    try:
        return not _items(component).get("_target_")
    except TypeError:
        return False
