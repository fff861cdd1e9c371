"""What `dataflex-run` checks before Hydra creates or touches any run folder (single runs).

- `--resume DIR` is `trainer.output_dir=DIR trainer.resume_from_checkpoint=auto`.
- A resume is the same run: the run's saved command line (`DIR/.hydra/overrides.yaml`) is replayed, the new
  command line may only change `RESUME_SAFE_KEYS`, and a completed run is refused. The run's `.hydra/` is
  kept as it was (the resumed process writes no new one).
- A new run never writes into a folder that holds a run (checked before Hydra writes `.hydra/` there).
- With `trainer.output_dir` set, the Hydra run dir is that folder: `.hydra/`, `status.json` and the log sit
  beside the metrics and checkpoints instead of in a stray `outputs/<date>/<time>/`.

Anything this step cannot compose (a typo, a bad value) is left to Hydra and validation, which report it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dataflex.run_dir import RESUME_SAFE_KEYS, check_output_dir, config_changes

RESUME_FLAG = "--resume"


class Refused(SystemExit):
    """A refusal before anything ran: the message on stderr, exit code 1, no traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(f"dataflex-run: error: {message}")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _is_hydra(override: str) -> bool:
    return _key(override).startswith(("hydra.", "hydra/")) or _key(override) == "hydra"


def quote(value: str) -> str:
    """A path as a Hydra override value (quoted when it has characters the grammar treats specially)."""
    if re.fullmatch(r"[A-Za-z0-9_./~:@-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def expand_resume_flag(argv: list[str]) -> list[str]:
    """`--resume DIR` (or `--resume=DIR`) → `trainer.output_dir=DIR trainer.resume_from_checkpoint=auto`."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == RESUME_FLAG or arg.startswith(RESUME_FLAG + "="):
            if arg == RESUME_FLAG:
                if i + 1 >= len(argv) or argv[i + 1].startswith("-") or "=" in argv[i + 1]:
                    raise Refused("--resume needs a run folder: dataflex-run --resume outputs/<date>/<time>")
                target, i = argv[i + 1], i + 2
            else:
                target, i = arg.split("=", 1)[1], i + 1
            if any(a in ("-m", "--multirun") for a in argv):
                raise Refused("--resume continues one run; it cannot be combined with -m/--multirun.")
            run_dir = Path(target).expanduser().resolve()
            if not (run_dir / ".hydra" / "config.yaml").is_file():
                raise Refused(
                    f"--resume {target}: {run_dir} has no .hydra/config.yaml, so it is not a DataFlex run "
                    "folder (pass the folder that holds .hydra/, metrics.jsonl and checkpoint-*)."
                )
            out += [f"trainer.output_dir={quote(str(run_dir))}", "trainer.resume_from_checkpoint=auto"]
            continue
        out.append(arg)
        i += 1
    return out


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    from dataflex.config.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def _select(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra job: unknown until Hydra runs
        return None


def _merge_overrides(saved: list[str], new: list[str]) -> list[str]:
    """The saved command line with the new overrides on top (a new value replaces the saved one of its key;
    a key the saved run added with `+` is set without `+` now that it exists)."""
    new_keys = {_key(o): o for o in new}
    merged = [o for o in saved if _key(o) not in new_keys]
    saved_prefix = {_key(o): o[: len(o) - len(o.lstrip("+~"))] for o in saved}
    for key, override in new_keys.items():
        if saved_prefix.get(key) == "+" and override.startswith("+") and not override.startswith("++"):
            override = override[1:]
        merged.append(override)
    return merged


def _group_changes(run_dir: Path, new: list[str]) -> list[str]:
    """Config-group choices (`model=tiny_moe`, `trainer=...`) that differ from the saved run's."""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    choices = OmegaConf.load(hydra_file).hydra.runtime.choices if hydra_file.is_file() else {}
    changes = []
    for override in new:
        key, _, value = override.lstrip("+~").partition("=")
        if "." in key or _safe_key(key) or key not in choices:
            continue
        if str(choices[key]) != value:
            changes.append(f"{key}: {choices[key]!r} -> {value!r}")
    return changes


def _safe_key(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_SAFE_KEYS)


def _same_run_overrides(run_dir: Path, overrides: list[str]) -> list[str]:
    """Overrides that re-create the run saved in `run_dir` plus the new (safe) ones; refuses changes."""
    saved_cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    saved = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    new = [o for o in overrides if not _is_hydra(o)]
    group_changes = _group_changes(run_dir, new)
    changed_groups = {c.split(":", 1)[0] for c in group_changes}
    merged = _merge_overrides(
        [o for o in saved if not _is_hydra(o)], [o for o in new if _key(o) not in changed_groups]
    )
    try:
        changes = group_changes + config_changes(saved_cfg, _compose(merged))
    except Exception as err:  # noqa: BLE001 - report what failed, briefly
        raise Refused(
            f"cannot re-create the run saved in {run_dir}/.hydra from its overrides: {err}"
        ) from None
    if changes:
        listed = "\n  ".join(changes)
        raise Refused(
            f"{run_dir} would resume with a different config; a resumed run is the same run.\n  {listed}\n"
            f"Only {', '.join(RESUME_SAFE_KEYS)} may change on resume. To train differently, start a "
            "new run in another trainer.output_dir."
        )
    return merged


def preflight(argv: list[str]) -> list[str]:
    """Checks a single run's folder before Hydra touches it; returns the argv Hydra should run."""
    argv = expand_resume_flag(argv)
    if any(a.startswith("-") for a in argv):  # -m, --cfg, --help, -sc, --config-dir ...: Hydra's business
        return argv
    overrides = list(argv)
    try:
        cfg = _compose(overrides)
    except Exception:  # noqa: BLE001 - Hydra composes again and reports the error in its own words
        return argv
    output_dir, resume = _select(cfg, "trainer.output_dir"), _select(cfg, "trainer.resume_from_checkpoint")
    hydra_dir = _select(cfg, "hydra.run.dir")
    explicit_hydra_dir = any(_key(o) == "hydra.run.dir" for o in overrides)
    run_dir = Path(output_dir or hydra_dir) if (output_dir or hydra_dir) else None
    if run_dir is None:
        return argv
    run_dir = run_dir.expanduser().resolve()
    saved = run_dir / ".hydra" / "config.yaml"
    overwrite = bool(_select(cfg, "trainer.overwrite_output_dir"))
    # Under plain torchrun every rank runs this; only rank 0 judges the folder (a slower rank could otherwise
    # see the files rank 0 already started writing). torchrun stops the others when rank 0 refuses.
    judge = int(os.environ.get("RANK", "0")) == 0
    try:
        if judge:
            check_output_dir(run_dir, overwrite, resuming=bool(resume), clear=False)
    except (OSError, ValueError) as err:
        raise Refused(str(err)) from None
    if judge and explicit_hydra_dir and output_dir and hydra_dir and Path(hydra_dir).resolve() != run_dir:
        # The Hydra dir holds .hydra/ and status.json: it must not be another run's folder either.
        try:
            check_output_dir(Path(hydra_dir).resolve(), overwrite, resuming=bool(resume), clear=False)
        except (OSError, ValueError) as err:
            raise Refused(str(err)) from None
    hydra_args = [o for o in overrides if _is_hydra(o)]
    if resume and saved.is_file():
        task = _same_run_overrides(run_dir, overrides)
        # The run's own .hydra/ stays as it was: this process records nothing new there.
        extra = [] if explicit_hydra_dir else [f"hydra.run.dir={quote(str(run_dir))}"]
        return [*task, *hydra_args, *extra, "hydra.output_subdir=null"]
    if output_dir and not explicit_hydra_dir:
        return [*argv, f"hydra.run.dir={quote(str(run_dir))}"]
    return argv
