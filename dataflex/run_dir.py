"""One folder, one run: never write into another run's results, and a resumed run is the same run.

- `check_output_dir` refuses a folder that holds a run's results (or a file), clears it when told to
  overwrite (stale `checkpoint-*` included, so a later `auto` never resumes another run's checkpoint), and
  refuses to "resume" a run that already completed.
- `config_changes` lists what a resume would change against the run's saved `.hydra/config.yaml`; only the
  keys in `RESUME_SAFE_KEYS` may differ (they change how a run is watched or saved, not what it trains).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

RESULT_FILES = ("metrics.jsonl", "final_model", "summary.json")
"""What makes a folder hold a run (besides `checkpoint-*`)."""
CLEARED_ON_OVERWRITE = (
    *RESULT_FILES,
    "plots",
    "wandb_run_id",
    "selection",
    "mixture_history.json",
    "mixture_history.png",
    "ledger",
)
"""Removed by `trainer.overwrite_output_dir=true` so nothing of the old run mixes into the new one."""

RESUME_SAFE_KEYS = (
    "trainer.resume_from_checkpoint",
    "trainer.output_dir",
    "trainer.disable_tqdm",
    "trainer.save_steps",
    "trainer.save_total_limit",
    "launcher.master_port",
    "logger",
)
"""Keys (and whole nodes) a resume may change: how the run is watched, logged and checkpointed. Anything
else (steps, learning rate, data, model, trainer, component, seed, ...) would make it another run."""


def run_results(run_dir: Path) -> list[str]:
    """The result files and checkpoints in `run_dir`, sorted."""
    found = [name for name in RESULT_FILES if (run_dir / name).exists()]
    found += [p.name for p in run_dir.glob("checkpoint-*")]
    return sorted(found)


def completed(run_dir: Path) -> list[str]:
    """Evidence that the run in `run_dir` finished: its summary or final model (empty if none)."""
    marks = [name for name in ("summary.json", "final_model") if (run_dir / name).exists()]
    try:
        if json.loads((run_dir / "status.json").read_text()).get("status") == "completed":
            marks.append("status.json: completed")
    except (OSError, ValueError):
        pass
    return marks


def check_output_dir(run_dir: Path, overwrite: bool, resuming: bool = False, clear: bool = True) -> None:
    """Refuses to write into a folder that holds a run's results unless told to overwrite (then clears them
    when `clear`); when resuming, refuses a run that already completed (nothing to resume, and its final
    model, summary and metrics must not be overwritten)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(
            f"trainer.output_dir={run_dir} is a file, not a folder; point it at a new or existing folder."
        )
    if resuming:
        if overwrite:
            raise ValueError(
                "trainer.overwrite_output_dir=true and trainer.resume_from_checkpoint are both set: "
                "resume continues the run in the folder, overwrite deletes it. Choose one."
            )
        done = completed(run_dir)
        if done:
            raise FileExistsError(
                f"{run_dir} holds a completed run ({', '.join(done)}); there is nothing to "
                "resume. Start a new run in another trainer.output_dir."
            )
        return
    existing = run_results(run_dir)
    if existing and not overwrite:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pick another "
            "trainer.output_dir or set trainer.overwrite_output_dir=true to overwrite it."
        )
    if existing and clear:
        clear_run(run_dir)


def clear_run(run_dir: Path) -> None:
    """Deletes a previous run's results and checkpoints (`trainer.overwrite_output_dir=true`)."""
    doomed = [run_dir / name for name in CLEARED_ON_OVERWRITE] + list(run_dir.glob("checkpoint-*"))
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        if not node and prefix:
            return {prefix: {}}
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _safe(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_SAFE_KEYS)


def config_changes(saved, new) -> list[str]:
    """`key: old -> new` for every key outside `RESUME_SAFE_KEYS` whose (unresolved) value differs."""
    from omegaconf import OmegaConf

    def plain(cfg):
        container = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
        container.pop("hydra", None)
        return _flatten(container)

    old, cur = plain(saved), plain(new)
    missing = object()
    changes = []
    for key in sorted(set(old) | set(cur)):
        a, b = old.get(key, missing), cur.get(key, missing)
        if a != b and not _safe(key):
            show = lambda v: "(absent)" if v is missing else repr(v)  # noqa: E731
            changes.append(f"{key}: {show(a)} -> {show(b)}")
    return changes


CHECKPOINT_KEYS = ("trainer._target_", "component._target_", "model")
"""What a checkpoint's weights and state depend on: its trainer, component and model config."""


def saved_run_config(run_dir: Path):
    """The config a run in `run_dir` was started with (`.hydra/config.yaml`, else the resolved one the
    launcher wrote), or None."""
    from omegaconf import OmegaConf

    for name in ("config.yaml", "resolved_config.yaml"):
        if (run_dir / ".hydra" / name).is_file():
            return OmegaConf.load(run_dir / ".hydra" / name)
    return None


def checkpoint_mismatch(cfg, checkpoint: Path) -> list[str]:
    """`key: saved -> now` for the trainer/component/model keys that differ from the run that wrote it."""
    from omegaconf import OmegaConf

    saved = saved_run_config(Path(checkpoint).parent)
    if saved is None:
        return []

    def wanted(c):
        return OmegaConf.masked_copy(c, [k.split(".")[0] for k in CHECKPOINT_KEYS if k.split(".")[0] in c])

    changes = config_changes(wanted(saved), wanted(cfg))
    return [c for c in changes if any(c.startswith(k) for k in CHECKPOINT_KEYS)]
