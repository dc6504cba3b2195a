"""Stand-ins for ``componentize_py_types.Err`` and ``Ok``, shared by the
other fakes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

E = TypeVar("E")
T = TypeVar("T")


@dataclass(frozen=True)
class Err(Generic[E], Exception):
    """As ``componentize_py_types.Err``."""

    value: E


@dataclass
class Ok(Generic[T]):
    """As ``componentize_py_types.Ok``."""

    value: T
