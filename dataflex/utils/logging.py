"""The package logger (public API: `from dataflex.utils.logging import logger`).

No handler of its own: under `dataflex-run`, Hydra's logging config sends it to the console and to
`<run dir>/dataflex.log`; as a library it follows the application's logging setup."""

from __future__ import annotations

import logging

logger = logging.getLogger("dataflex")
