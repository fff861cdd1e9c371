"""The package logger (public API: `from dataflex.utils.logging import logger`)."""

from __future__ import annotations

import logging

logger = logging.getLogger("dataflex")
if not logging.getLogger().handlers and not logger.handlers:
    # Outside a Hydra job (library use, tests) still show INFO messages once.
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
