"""Why a call to the host failed: one exception class per error the VMBus,
key-value and configuration interfaces can return.

Every host error is a :class:`WeftError`. The queue's errors mirror the WIT
variant ``weft:vmbus/types.error`` (:class:`RateLimited`, :class:`TooLarge`,
:class:`Denied`, :class:`NotFound`, :class:`Unavailable`, :class:`Invalid`);
key-value errors are :class:`KeyValueError` and its subclasses; settings
errors are :class:`ConfigError`. :attr:`WeftError.transient` says whether
the same call may succeed later (the worker loop backs off and retries
those). The host's messages never carry host paths or internals.
"""

from __future__ import annotations

from typing import Any

from componentize_py_types import Err

__all__ = [
    "WeftError",
    "RateLimited",
    "TooLarge",
    "Denied",
    "NotFound",
    "Unavailable",
    "Invalid",
    "KeyValueError",
    "NoSuchBucket",
    "AccessDenied",
    "BucketFull",
    "ConfigError",
    "from_err",
]


class WeftError(Exception):
    """A host call failed; ``reason`` is the host's explanation (may be empty)."""

    _transient = False
    _label = "weft error"

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def transient(self) -> bool:
        """Whether the same call may succeed if retried later."""
        return self._transient

    def __str__(self) -> str:
        return f"{self._label}: {self.reason}" if self.reason else self._label


class RateLimited(WeftError):
    """The role used up its rate limit for this interface; retry later."""

    _transient = True
    _label = "rate limited; retry later"


class TooLarge(WeftError):
    """An argument exceeded a limit (a body over 64 KiB, a batch over 32...)."""

    _label = "too large"


class Denied(WeftError):
    """The role's manifest does not grant this (a queue it does not list...)."""

    _label = "denied"


class NotFound(WeftError):
    """No such thing: an unknown or stale receipt, an empty name..."""

    _label = "not found"


class Unavailable(WeftError):
    """The backend cannot serve the call now; the same call may succeed later."""

    _transient = True
    _label = "unavailable"


class Invalid(WeftError):
    """An argument is malformed (a zero batch size, a timeout out of range...)."""

    _label = "invalid"


class KeyValueError(WeftError):
    """A key-value call failed: the base of the key-value errors, and itself
    the error for any other reason the host gives (a backend failure, a rate
    limit...). Not transient, as in the Rust SDK: the host's text does not
    say reliably whether a retry helps."""

    _label = "key-value error"


class NoSuchBucket(KeyValueError):
    """The host knows no bucket by that name."""

    _label = "no such key-value bucket"


class AccessDenied(KeyValueError):
    """The role may not open that bucket (which may or may not exist)."""

    _label = "access to the key-value bucket denied"


class BucketFull(KeyValueError):
    """The bucket is full: writes that grow it are refused until entries are
    deleted or expire. Retrying soon does not help."""

    _label = "key-value bucket full"


class ConfigError(WeftError):
    """Reading the role's settings failed (the source, or I/O)."""

    _label = "configuration error"


# How the host's key-value `error::other` for a full bucket begins (the
# standard WIT has no variant for it).
_BUCKET_FULL = "bucket-full"

# The generated binding classes, by name: the names are unique across the
# queue, key-value and config interfaces, and matching names (not classes)
# works in both worlds, whose bindings name the `types` module differently.
_SIMPLE: dict[str, type[WeftError]] = {
    "Error_RateLimited": RateLimited,
    "Error_TooLarge": TooLarge,
    "Error_Denied": Denied,
    "Error_NotFound": NotFound,
    "Error_Unavailable": Unavailable,
    "Error_Invalid": Invalid,
    "Error_NoSuchStore": NoSuchBucket,
    "Error_AccessDenied": AccessDenied,
    "Error_Upstream": ConfigError,
    "Error_Io": ConfigError,
}


def _key_value_other(why: str) -> KeyValueError:
    if why.startswith(_BUCKET_FULL):
        return BucketFull(why[len(_BUCKET_FULL) :].lstrip(":").lstrip())
    return KeyValueError(why)


def from_err(err: Any) -> WeftError:
    """The exception for a ``componentize_py_types.Err`` raised by a host
    call (or for its ``value``, the WIT error variant). An error this SDK
    does not know becomes a plain :class:`WeftError` carrying its repr."""
    value = err.value if isinstance(err, Err) else err
    name = type(value).__name__
    reason = getattr(value, "value", "")
    reason = reason if isinstance(reason, str) else ""
    if name == "Error_Other":
        return _key_value_other(reason)
    cls = _SIMPLE.get(name)
    if cls is None:
        return WeftError(repr(value))
    return cls(reason)
