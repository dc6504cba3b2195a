"""Helpers shared by the SDK's modules: numbers and bodies as they cross the
VMBus, host calls whose `Err` becomes a :class:`~weft.errors.WeftError`, and
the SDK's own log lines."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import TypeVar

from componentize_py_types import Err

from .errors import from_err

T = TypeVar("T")

U32_MAX = 2**32 - 1

#: The largest batch one receive or peek may return.
MAX_BATCH = 32


def u32(value: float, what: str) -> int:
    """`value` as a WIT u32: negative values (and NaN) are refused, large
    ones (even ``math.inf``) saturate at 2**32 - 1 (about 49 days of
    milliseconds), as in the Rust SDK."""
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must not be negative, not {value}")
    # Saturate first: int(math.inf) would raise.
    return U32_MAX if value >= U32_MAX else int(value)


def batch(max_messages: int) -> int:
    """``max_messages`` clamped to 1..:data:`MAX_BATCH`."""
    return min(max(int(max_messages), 1), MAX_BATCH)


def as_bytes(body: bytes | bytearray | memoryview | str) -> bytes:
    """``body`` as bytes; text is encoded as UTF-8."""
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def log(line: str) -> None:
    """Writes one of the SDK's lines to stderr (what ``weft logs`` shows),
    flushed at once: an instance may be stopped before a buffer would be."""
    print(f"weft: {line}", file=sys.stderr, flush=True)


def call(fn: Callable[..., T], *args: object) -> T:
    """Calls a generated binding, turning its `Err` into a `WeftError`."""
    try:
        return fn(*args)
    except Err as err:
        raise from_err(err) from None
