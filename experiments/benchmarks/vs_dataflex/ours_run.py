"""`dataflex-run OVERRIDES...` in this process, plus wall-clock timers; writes TIMING_JSON.

usage: python ours_run.py TIMING_JSON [dataflex-run overrides ...]

Timers (nothing in DataFlex is changed; the methods are wrapped for this process only):
- every optimizer step (`TrainingLoop._train_step`: collation, forward, backward, optimizer), with whether the
  dynamic_weight trainer weighted it;
- every component update: `DynamicSelectTrainer._run_update` (selector.select + the new plan) and
  `DynamicMixTrainer._update` (mixer.mix + the new proportions) -- what the peer's harness times around
  DataFlex 1.1's `dataflex_next_indices`.
The run's own summary.json (loop wall time, steps) is copied into the JSON.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

TIMES: dict = {"steps": [], "updates": []}


def _timed(cls, name: str, record) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        out = original(self, *args, **kwargs)
        record(self, args, time.perf_counter() - start)
        return out

    setattr(cls, name, wrapper)


def instrument() -> None:
    from dataflex.train.loop import TrainingLoop
    from dataflex.train.trainer.dynamic_mix import DynamicMixTrainer
    from dataflex.train.trainer.dynamic_select import DynamicSelectTrainer

    def step(loop, args, seconds):
        weighting = getattr(loop.trainer, "weighting", None)
        TIMES["steps"].append(
            {
                "step": int(args[0]),
                "seconds": seconds,
                "weighted": bool(weighting(int(args[0]))) if callable(weighting) else None,
            }
        )

    def update(trainer, args, seconds):
        TIMES["updates"].append({"step": int(args[0]), "seconds": seconds})

    _timed(TrainingLoop, "_train_step", step)
    _timed(DynamicSelectTrainer, "_run_update", update)
    _timed(DynamicMixTrainer, "_update", update)


def main() -> None:
    out = Path(sys.argv[1])
    overrides = sys.argv[2:]
    run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("trainer.output_dir=")), None)
    start = time.perf_counter()
    instrument()
    from dataflex.cli import main as dataflex_main

    sys.argv = ["dataflex-run", *overrides]
    status = "ok"
    try:
        dataflex_main()
    except SystemExit as exc:
        status = "ok" if not exc.code else f"exit {exc.code}"
    except BaseException as exc:  # recorded, then re-raised
        status = f"error: {type(exc).__name__}: {exc}"
        raise
    finally:
        summary = Path(run_dir or ".") / "summary.json"
        result = {
            "status": status,
            "in_process_s": time.perf_counter() - start,
            **TIMES,
            "summary": json.loads(summary.read_text()) if summary.is_file() else None,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
