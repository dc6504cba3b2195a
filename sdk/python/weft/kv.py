"""Key-value buckets, through the standard ``wasi:keyvalue/store`` interface.

:meth:`Bucket.open` opens one of the buckets the role's manifest lists; any
other name raises :class:`~weft.errors.AccessDenied` or
:class:`~weft.errors.NoSuchBucket`. Keys are strings, values bytes (text is
stored as UTF-8). A bucket reads its own writes.

A bucket holds at most 64 MiB (keys and values). A write to a full bucket
raises :class:`~weft.errors.BucketFull`: retrying soon does not help until
entries are deleted or expire (the manifest's ``[buckets.NAME]
ttl-seconds``). An entry of a bucket with a time to live reads as missing
once it expires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wit_world.imports import wasi_keyvalue_store as _wit

from . import _wire

__all__ = ["Bucket"]


class Bucket:
    """An open key-value bucket."""

    def __init__(self, name: str, inner: Any) -> None:
        """Use :meth:`Bucket.open`; this wraps an already open binding."""
        self.name = name
        self._inner = inner

    @classmethod
    def open(cls, name: str) -> Bucket:
        """Opens the bucket ``name``, which the role's manifest must list."""
        return cls(name, _wire.call(_wit.open, name))

    def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None."""
        value = _wire.call(self._inner.get, key)
        return None if value is None else bytes(value)

    def get_text(self, key: str) -> str | None:
        """The value under ``key`` decoded as UTF-8, or None."""
        value = self.get(key)
        return None if value is None else value.decode("utf-8")

    def set(self, key: str, value: bytes | str) -> None:
        """Stores ``value`` (text as UTF-8) under ``key``, replacing any value there."""
        _wire.call(self._inner.set, key, _wire.as_bytes(value))

    def delete(self, key: str) -> None:
        """Deletes ``key``; deleting a missing key is not an error."""
        _wire.call(self._inner.delete, key)

    def exists(self, key: str) -> bool:
        """Whether a value is stored under ``key``."""
        return bool(_wire.call(self._inner.exists, key))

    def keys(self) -> list[str]:
        """Every key in the bucket, in no particular order. Every page is
        fetched before this returns, so deleting keys while walking the list
        is safe (the host's cursor counts positions among the keys still
        there: a lazy walk would skip some). May be expensive on a large
        bucket."""

        def page(cursor: int | None) -> tuple[list[str], int | None]:
            response = _wire.call(self._inner.list_keys, cursor)
            return list(response.keys), response.cursor

        return _collect_pages(page)

    def __repr__(self) -> str:
        return f"Bucket({self.name!r})"


def _collect_pages(
    fetch: Callable[[int | None], tuple[list[str], int | None]],
) -> list[str]:
    """Calls ``fetch`` with each page's cursor (starting with None) until a
    page comes back without a next cursor, or with the cursor it was asked
    for (which would otherwise loop forever), and concatenates the keys (as
    the Rust SDK's ``collect_pages``)."""
    keys: list[str] = []
    cursor: int | None = None
    while True:
        page, following = fetch(cursor)
        keys.extend(page)
        if following is None or following == cursor:
            return keys
        cursor = following
