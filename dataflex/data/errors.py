"""Error types of the data layer.

Every error raised for bad input is a `DataError` (a `ValueError`, so callers that already catch
`ValueError` keep working) and its message names the file / dataset / row / key involved and the fix.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad data or bad dataset configuration; the message says where and how to fix it."""


class MissingFieldError(DataError, KeyError):
    """A row lacks a field its converter needs. Raised by converters with the field name only; the engine
    re-raises it as a `DataError` that also names the dataset and the row."""

    def __init__(self, field: str, detail: str = "") -> None:
        self.field = field
        self.detail = detail
        super().__init__(field)

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return f"missing field {self.field!r}" + (f" ({self.detail})" if self.detail else "")


class RowFormatError(DataError):
    """A row is present but has the wrong shape (e.g. a message without a role). Raised by converters; the
    engine re-raises it naming the dataset and the row."""


class SamplerExhausted(RuntimeError):
    """An `IndexListSampler` was asked for more indices than its list still holds."""


class MixtureInfeasible(DataError):
    """A mixture needs more of a domain than its `max_repetitions` allows; the message gives the numbers."""
