"""What the host has measured of this role's use of the machine, read-only,
through ``weft:vmbus/usage``: for roles that degrade gracefully, shedding
optional work when their CPU share is squeezed, their calls are being rate
limited, or their deadline is near.

"Role" figures cover every instance of the role on this host since it
started; "instance" figures cover the calling sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass

from wit_world.imports import usage as _wit

from . import _wire

__all__ = ["Usage", "get"]


@dataclass(frozen=True)
class Usage:
    """The host's figures for this role and this instance, at one moment."""

    #: Fuel (about one unit per wasm instruction) the role has burnt.
    fuel_used: int
    #: Fuel left in this instance's budget for the current request or batch.
    fuel_left: int
    #: The role's share of all fuel burnt on the host over the last second, in parts per million.
    cpu_share_ppm: int
    #: The role's CPU weight (100 unless its manifest says otherwise).
    weight: int
    #: Milliseconds the role's guests waited for a CPU while other roles ran.
    parked_ms: int
    #: Milliseconds the role's guests were held back by its CPU quota.
    throttled_ms: int
    #: VMBus calls the role made that were admitted.
    calls: int
    #: VMBus calls the role made that were refused as rate limited.
    calls_rate_limited: int
    #: This instance's linear memory, in bytes.
    memory_bytes: int
    #: This instance's memory cap, in bytes.
    memory_cap_bytes: int
    #: All of the role's instances together, in bytes.
    role_memory_bytes: int
    #: The cap on all of the role's instances together, if it has one.
    role_memory_cap_bytes: int | None
    #: Milliseconds left before this request's or batch's deadline, if one runs.
    deadline_left_ms: int | None

    @property
    def cpu_share(self) -> float:
        """The role's CPU share over the last second, from 0 to 1."""
        return self.cpu_share_ppm / 1e6


def get() -> Usage:
    """The figures now. Raises only :class:`~weft.errors.RateLimited`."""
    raw = _wire.call(_wit.get)
    return Usage(
        fuel_used=raw.fuel_used,
        fuel_left=raw.fuel_left,
        cpu_share_ppm=raw.cpu_share_ppm,
        weight=raw.weight,
        parked_ms=raw.parked_ms,
        throttled_ms=raw.throttled_ms,
        calls=raw.calls,
        calls_rate_limited=raw.calls_rate_limited,
        memory_bytes=raw.memory_bytes,
        memory_cap_bytes=raw.memory_cap_bytes,
        role_memory_bytes=raw.role_memory_bytes,
        role_memory_cap_bytes=raw.role_memory_cap_bytes,
        deadline_left_ms=raw.deadline_left_ms,
    )
