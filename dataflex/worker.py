"""One rank of `dataflex-run launcher.nproc_per_node=N`: `python -m dataflex.worker <config.yaml> <run_dir>`.

Started by torchrun; runs the already composed and validated config. Rank 0 logs to the console and to
`<run_dir>/dataflex.log`; other ranks log warnings only."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf


def main(argv: list[str] | None = None) -> None:
    config_file, run_dir = (argv if argv is not None else sys.argv[1:])[:2]
    rank = int(os.environ.get("RANK", "0"))
    handlers: list[logging.Handler] = []
    if rank == 0:
        handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(Path(run_dir) / "dataflex.log")]
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        handlers=handlers or None,
        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
    )
    import dataflex.cli  # noqa: F401  (registers schemas and resolvers)
    from dataflex.run import run
    from dataflex.tracking.status import write_status
    from dataflex.train.interrupt import TrainingInterrupted

    try:
        run(OmegaConf.load(config_file), run_dir)
    except TrainingInterrupted as stop:
        # A clean stop, not a failure: rank 0 tells the launching process where (it reads status.json) and
        # every rank exits 0 so torchrun does not report a crash.
        write_status(run_dir, "interrupted", **stop.fields())


if __name__ == "__main__":
    main()
