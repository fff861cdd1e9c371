"""Where the Hydra configs are: `conf/` of a source checkout, else the copy inside the installed wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"DataFlex configs not found next to {PACKAGE_DIR}; "
        "reinstall with `pip install -e .` or `pip install .`."
    )
