"""Builders shared by tests: a small real trainer on the embedded data."""

from __future__ import annotations

from pathlib import Path

from dataflex.data import DataArguments, DataEngine
from dataflex.data.processor import TokenizedData
from dataflex.models.tiny import build_tiny_model
from dataflex.tracking import TrackerGroup

# Tiny settings for fast end-to-end runs.
FAST = (
    "trainer.max_steps=4",
    "trainer.logging_steps=2",
    "trainer.eval_steps=2",
    "trainer.max_eval_samples_per_domain=8",
    "trainer.per_device_train_batch_size=4",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.num_key_value_heads=2",
    "data.max_samples=64",
    "trainer.disable_tqdm=true",
    # ~1.3 s of matplotlib per run; the plots are checked where they are the point (PLOTTED, tests/tracking)
    "logger.plots=false",
)
PLOTTED = tuple(o for o in FAST if o != "logger.plots=false")
"""FAST with the run's PNG plots drawn (logger.plots, on by default)."""

REPO = Path(__file__).resolve().parent.parent

SMALL_MODEL = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2
)


def small_data(tokenizer, max_samples: int = 32, split: str = "train", cutoff_len: int = 64) -> TokenizedData:
    engine = DataEngine(DataArguments(max_samples=max_samples, cutoff_len=cutoff_len), split=split)
    return TokenizedData(engine, tokenizer, cutoff_len)


def small_trainer(trainer_cls, run_dir, *, model_kwargs=None, eval_data=False, **args):
    """A real trainer on a 2-layer 32-dim tiny LLaMA and 32 rows per domain; args are TrainingArguments."""
    bundle = build_tiny_model(**{**SMALL_MODEL, **(model_kwargs or {})})
    train = small_data(bundle.tokenizer)
    evald = small_data(bundle.tokenizer, max_samples=8, split="eval") if eval_data else None
    defaults = dict(
        max_steps=2,
        per_device_train_batch_size=8,
        disable_tqdm=True,
        eval_on_start=False,
        eval_steps=0,
        save_final_model=False,
        logging_steps=1,
    )
    return trainer_cls(
        bundle=bundle,
        train_data=train,
        eval_data=evald,
        trackers=TrackerGroup([]),
        run_dir=str(run_dir),
        **{**defaults, **args},
    )


def resumed_small_trainer(trainer_cls, tmp_path, step: int, **args):
    """`small_trainer` in tmp_path/resumed, resuming the run in tmp_path/full from its checkpoint-`step`."""
    return small_trainer(
        trainer_cls,
        tmp_path / "resumed",
        resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{step}"),
        **args,
    )


def run_in_process(compose, out: Path, *overrides: str) -> dict:
    """`dataflex-run <overrides> trainer.output_dir=<out>` in this process, for the uninterrupted reference
    run of a kill-and-resume test (the killed and resumed runs stay real CLI processes); saves the ~8 s of
    interpreter and library start-up a subprocess pays. Returns the run's summary."""
    from dataflex.run import run

    return run(compose(*overrides, f"trainer.output_dir={out}"), out)
