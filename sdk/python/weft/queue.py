"""Weft's queues: at-least-once delivery with leases.

:func:`send` puts a message on a queue (optionally delayed, with a time to
live, or with a dedupe id that makes retrying the send safe). :func:`receive`
takes up to a batch of visible messages and hides each from other receivers
for its *visibility timeout* (its lease). Settle each delivery before the
lease lapses: :func:`complete` deletes the message (:func:`complete_batch`
deletes a whole batch's in one host call, which the role's queue rate limit
counts once), :func:`abandon` makes it visible again (after an optional
delay), :func:`extend` keeps it longer. A message whose lease lapses
unsettled comes back with its ``dequeue_count`` one higher; after the host's
maximum number of deliveries it moves to the queue ``<queue>-poison``, where
``poison_reason`` says why. :func:`length` and :func:`peek` look at a queue
without receiving from it.

A message may be delivered more than once: handle it idempotently. Most
worker roles use :class:`weft.Worker`, which runs the receive/settle loop.
A role may only use the queues its manifest lists; any other name raises
:class:`~weft.errors.Denied`.
"""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any

from componentize_py_types import Err
from wit_world.imports import queue as _wit

from . import _wire
from .errors import WeftError, from_err

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_BATCH",
    "Message",
    "Peeked",
    "send",
    "receive",
    "complete",
    "complete_batch",
    "abandon",
    "extend",
    "length",
    "peek",
]

#: The largest message body the host accepts, in bytes (64 KiB).
MAX_BODY_BYTES = 65_536

#: The largest batch one :func:`receive` or :func:`peek` may return.
MAX_BATCH = _wire.MAX_BATCH


@dataclass(frozen=True)
class Message:
    """One delivery of a message, as :func:`receive` returns it."""

    #: The message's id, stable across deliveries (the one :func:`send` returned).
    id: str
    #: The bytes that were sent.
    body: bytes
    #: How many times the message has been delivered, this one included (1 on the first).
    dequeue_count: int
    #: When the message was sent, in milliseconds since the Unix epoch.
    inserted_at_ms: int
    #: Proof of this delivery, for complete/abandon/extend; valid until its lease lapses.
    receipt: str
    #: Why the host moved the message to this poison queue (None on an ordinary queue).
    poison_reason: str | None = None

    @property
    def text(self) -> str:
        """The body as UTF-8 text (raises ``UnicodeDecodeError`` if it is not)."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not)."""
        return _json.loads(self.body)


@dataclass(frozen=True)
class Peeked:
    """A message seen by :func:`peek`, which leases nothing."""

    #: The message's id.
    id: str
    #: The bytes that were sent.
    body: bytes
    #: Deliveries so far, where the host's backend knows it (else 0).
    dequeue_count: int
    #: When the message was sent, in milliseconds since the Unix epoch.
    inserted_at_ms: int
    #: Why the message was moved to this poison queue, if it was.
    poison_reason: str | None = None

    @property
    def text(self) -> str:
        """The body as UTF-8 text (raises ``UnicodeDecodeError`` if it is not)."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not)."""
        return _json.loads(self.body)


def _message(m: Any) -> Message:
    return Message(
        id=m.id,
        body=bytes(m.body),
        dequeue_count=m.dequeue_count,
        inserted_at_ms=m.inserted_at_ms,
        receipt=m.receipt,
        poison_reason=m.poison_reason,
    )


def send(
    queue: str,
    body: bytes | str,
    *,
    delay_ms: int = 0,
    ttl_ms: int = 0,
    dedupe_id: str | None = None,
) -> str:
    """Sends ``body`` (text is sent as UTF-8) to ``queue`` and returns the new
    message's id; for a send deduped by ``dedupe_id`` (1 to 128 bytes, the
    same on every retry of one send), the first send's id.

    ``delay_ms``: how long the message stays invisible (0: visible at once; at
    most 7 days). ``ttl_ms``: how long it may wait to be received before the
    host drops it (0: it never expires). Raises :class:`~weft.errors.TooLarge`
    for a body over :data:`MAX_BODY_BYTES` and :class:`~weft.errors.Denied`
    for a queue the manifest does not list.
    """
    options = _wit.SendOptions(
        initial_invisibility_ms=_wire.u32(delay_ms, "delay_ms"),
        time_to_live_ms=_wire.u32(ttl_ms, "ttl_ms"),
        dedupe_id=dedupe_id,
    )
    return _wire.call(_wit.send, queue, _wire.as_bytes(body), options)


def receive(
    queue: str,
    max_messages: int = 8,
    visibility_timeout_ms: int = 30_000,
    wait_ms: int = 20_000,
) -> list[Message]:
    """Receives up to ``max_messages`` (clamped to 1..32) visible messages
    from ``queue``, each leased for ``visibility_timeout_ms``; when none is
    visible, waits up to ``wait_ms`` (the host caps it). The list may be
    empty. Defaults as in the Rust SDK: 8 messages, a 30 s lease, a 20 s wait.
    """
    batch = _wire.call(
        _wit.receive,
        queue,
        _wire.batch(max_messages),
        _wire.u32(visibility_timeout_ms, "visibility_timeout_ms"),
        _wire.u32(wait_ms, "wait_ms"),
    )
    return [_message(m) for m in batch]


def complete(queue: str, message: Message) -> None:
    """Deletes ``message`` from ``queue``. Raises :class:`~weft.errors.NotFound`
    if its lease has lapsed (it will be, or has been, delivered again)."""
    _wire.call(_wit.complete, queue, message.receipt)


def complete_batch(queue: str, messages: list[Message]) -> list[WeftError | None]:
    """Deletes ``messages`` (1 to :data:`MAX_BATCH`, as one :func:`receive`
    hands out) from ``queue`` in one host call, which the role's queue rate
    limit counts once. Returns each message's outcome, in order: ``None``
    when it was deleted, else the error :func:`complete` would have raised
    for it alone (:class:`~weft.errors.NotFound` for a lapsed lease). Raises
    when the call as a whole cannot be made (:class:`~weft.errors.RateLimited`,
    :class:`~weft.errors.Denied`, :class:`~weft.errors.Invalid` for no
    messages or more than 32)."""
    receipts = [message.receipt for message in messages]
    outcomes = _wire.call(_wit.complete_batch, queue, receipts)
    # Each outcome is the generated `Ok(None)` or `Err(error)`: a nested
    # result is a value, not an exception, in componentize-py's bindings.
    return [from_err(o) if isinstance(o, Err) else None for o in outcomes]


def abandon(queue: str, message: Message, delay_ms: int = 0) -> None:
    """Gives ``message`` back to ``queue``, visible again after ``delay_ms``
    (0: at once; at most 7 days)."""
    _wire.call(_wit.abandon, queue, message.receipt, _wire.u32(delay_ms, "delay_ms"))


def extend(queue: str, message: Message, visibility_timeout_ms: int) -> None:
    """Keeps ``message`` hidden for ``visibility_timeout_ms`` from now, for a
    handler that needs longer than its lease; its receipt stays valid."""
    _wire.call(
        _wit.extend,
        queue,
        message.receipt,
        _wire.u32(visibility_timeout_ms, "visibility_timeout_ms"),
    )


def length(queue: str) -> int:
    """How many messages ``queue`` holds: visible, delayed or leased."""
    return _wire.call(_wit.length, queue)


def peek(queue: str, max_messages: int = 1) -> list[Peeked]:
    """Up to ``max_messages`` (clamped to 1..32) of the next visible messages
    of ``queue``, in the order they would be received, without receiving them."""
    batch = _wire.call(_wit.peek, queue, _wire.batch(max_messages))
    return [
        Peeked(
            id=p.id,
            body=bytes(p.body),
            dequeue_count=p.dequeue_count,
            inserted_at_ms=p.inserted_at_ms,
            poison_reason=p.poison_reason,
        )
        for p in batch
    ]
