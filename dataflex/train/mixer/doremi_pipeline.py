"""`dataflex-doremi`: the three DoReMi steps in one command, each a `dataflex-run` of its preset.

    dataflex-doremi [--workdir DIR] [--steps N] [HYDRA_OVERRIDE ...]

1. `experiment=doremi_step1`: the reference model on the uniform mixture   -> DIR/reference/final_model
2. `experiment=doremi_step2`: the proxy (group DRO against the reference)  -> DIR/proxy/doremi_weights.json
3. `experiment=doremi_step3`: the main model on DoReMi's averaged weights  -> DIR/main

Overrides after the options (e.g. `model=hf model.name_or_path=...`, `data.dataset=...`) go to all three
steps. `--steps N` sets the length of every step (train_step / update_times). Each step's output path is
passed to the next explicitly; a failing step stops the chain with its exit code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def dataflex_run_cmd() -> list[str]:
    exe = shutil.which("dataflex-run")
    return [exe] if exe else [sys.executable, "-m", "dataflex.cli"]


def step_commands(workdir: Path, overrides: Sequence[str], steps: int | None = None) -> list[list[str]]:
    """The three `dataflex-run` argument lists, with every path of the chain made explicit."""
    ref, proxy, main_dir = workdir / "reference", workdir / "proxy", workdir / "main"
    s1 = ["experiment=doremi_step1", f"trainer.output_dir={ref}"]
    s2 = [
        "experiment=doremi_step2",
        f"trainer.output_dir={proxy}",
        f"component.reference_model_path={ref / 'final_model'}",
    ]
    s3 = [
        "experiment=doremi_step3",
        f"trainer.output_dir={main_dir}",
        f"trainer.mixture_proportions_file={proxy / 'doremi_weights.json'}",
    ]
    if steps is not None:
        s1.append(f"trainer.train_step={steps}")
        s2.append(f"trainer.update_times={steps}")
        s3.append(f"trainer.train_step={steps}")
    return [s + list(overrides) for s in (s1, s2, s3)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dataflex-doremi",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the three runs go (default: doremi_runs/<date>_<time> in the cwd)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="steps of each of the three runs (preset: 300)"
    )
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unknown option(s) {bad}; Hydra overrides look like key=value")
    if args.steps is not None and args.steps <= 0:
        parser.error("--steps must be > 0")
    workdir = args.workdir or Path("doremi_runs") / time.strftime("%Y-%m-%d_%H-%M-%S")
    for i, cmd in enumerate(step_commands(workdir, overrides, args.steps), start=1):
        print(f"[dataflex-doremi] step {i}/3: dataflex-run {' '.join(cmd)}", flush=True)
        code = subprocess.call(dataflex_run_cmd() + cmd)
        if code != 0:
            print(f"[dataflex-doremi] step {i} failed (exit code {code}); stopping.", file=sys.stderr)
            return code
    weights = json.loads((workdir / "proxy" / "doremi_weights.json").read_text())
    listing = ", ".join(f"{d}={p:.3f}" for d, p in zip(weights["domains"], weights["proportions"]))
    print(
        f"[dataflex-doremi] DoReMi domain weights: {listing}\n"
        f"[dataflex-doremi] main model: {workdir / 'main'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
