"""The pull loop of a worker role.

A worker role's ``app.py`` defines the ``Run`` export as a subclass of
:class:`Worker`, naming its queue and handling one message at a time::

    import weft
    from weft import Hooks  # the lifecycle hooks this world exports (no-ops)

    class Run(weft.Worker):
        queue = "tasks"

        def setup(self) -> None:
            self.results = weft.Bucket.open("results")

        def handle(self, message: weft.Message) -> None:
            self.results.set(message.id, message.text.upper())

The host calls ``run`` (the standard ``wasi:cli/run`` export), which calls
:meth:`Worker.setup` once (the place to open buckets and read settings: the
code a Rust worker runs in ``main`` before ``Worker::run``), then loops:

1. receive a batch (waiting for one if the queue is empty);
2. call ``handle`` on each message, and abandon a message at once (visible
   again after ``retry_delay_ms``) if it raised, logging the message id and
   the traceback to stderr, so it is delivered again;
3. once the whole batch is handled, complete the messages whose ``handle``
   returned with :func:`weft.queue.complete_batch`: one host call for the
   batch, so the role's queue rate limit counts one call per batch, not one
   per message.

A message is so completed only after the rest of its batch is handled: if
the instance dies mid-batch, the messages it handled but had not completed
are delivered again (delivery is at least once anyway). The visibility
timeout must cover the whole batch, as it always had to.

When the host asks the instance to stop, ``receive`` returns nothing and
``lifecycle.stopping()`` says so: having settled the batch it held, ``run``
returns. On ``RateLimited`` or ``Unavailable`` the loop sleeps (50 ms,
doubling up to 2 s) and retries: a receive, an abandon, or the batch's
completion call as a whole. A message the completion call answers with a
transient error is then completed on its own, with the same retries. A
settle that fails with ``NotFound`` means the lease lapsed first (the
message comes back anyway): it is logged and the loop carries on. Any other
error, or an exception from ``setup``, is logged and ends ``run`` as a
failure, and the host restarts the role. A handler that loops forever or
exhausts its limits is the host's business: it interrupts the instance and
the lease lapses.
"""

from __future__ import annotations

import time
import traceback
from typing import Protocol

from componentize_py_types import Err

from . import _wire, lifecycle
from . import queue as _queue
from .errors import NotFound, WeftError
from .queue import Message

__all__ = ["Worker"]

#: The first delay after a transient failure, in milliseconds.
BACKOFF_INITIAL_MS = 50
#: The longest delay between tries, in milliseconds.
BACKOFF_MAX_MS = 2_000

# Stands for the outcome of a message a batch completion did not answer.
_UNANSWERED = object()


class _Backoff:
    """Delays of 50 ms, 100 ms, 200 ms... doubling up to 2 s, until reset."""

    def __init__(self) -> None:
        self._next = BACKOFF_INITIAL_MS

    def next_delay_ms(self) -> int:
        """The delay to wait now; the next call returns twice as much (capped)."""
        delay = self._next
        self._next = min(self._next * 2, BACKOFF_MAX_MS)
        return delay

    def reset(self) -> None:
        """Starts again from the initial delay, after a success."""
        self._next = BACKOFF_INITIAL_MS


class _Bus(Protocol):
    """What the pull loop needs from the host, so the unit tests can run it
    without wasm."""

    def receive(
        self, queue: str, max_messages: int, visibility_timeout_ms: int, wait_ms: int
    ) -> list[Message]: ...

    def complete(self, queue: str, message: Message) -> None: ...

    def complete_batch(
        self, queue: str, messages: list[Message]
    ) -> list[WeftError | None]: ...

    def abandon(self, queue: str, message: Message, delay_ms: int) -> None: ...

    def sleep(self, delay_ms: int) -> None: ...

    def stopping(self) -> bool: ...


class _VmBus:
    """The real VMBus."""

    def receive(
        self, queue: str, max_messages: int, visibility_timeout_ms: int, wait_ms: int
    ) -> list[Message]:
        return _queue.receive(queue, max_messages, visibility_timeout_ms, wait_ms)

    def complete(self, queue: str, message: Message) -> None:
        _queue.complete(queue, message)

    def complete_batch(
        self, queue: str, messages: list[Message]
    ) -> list[WeftError | None]:
        return _queue.complete_batch(queue, messages)

    def abandon(self, queue: str, message: Message, delay_ms: int) -> None:
        _queue.abandon(queue, message, delay_ms)

    def sleep(self, delay_ms: int) -> None:
        # The host suspends the instance meanwhile.
        time.sleep(delay_ms / 1000)

    def stopping(self) -> bool:
        return lifecycle.stopping()


class Worker:
    """A worker role's ``Run`` export: pulls messages from :attr:`queue` and
    hands each to :meth:`handle`. Set the class attributes in a subclass,
    write :meth:`handle`, and :meth:`setup` if the worker needs to prepare."""

    #: The queue to pull from (the manifest must grant it).
    queue: str = ""
    #: The most messages to take per receive (clamped to 1..32).
    batch_size: int = 8
    #: How long each message is leased to this worker; comfortably longer
    #: than ``handle`` takes for a whole batch.
    visibility_timeout_ms: int = 30_000
    #: How long one receive waits when the queue is empty.
    wait_ms: int = 20_000
    #: How long a message whose handler raised stays invisible before it is
    #: delivered again (0: at once). A pause lets a downstream fault pass.
    retry_delay_ms: int = 0

    def setup(self) -> None:
        """Runs once, before the first receive: open buckets and read
        settings here, into attributes ``handle`` uses. It may also set
        :attr:`queue`. An exception fails ``run`` (logged), and the host
        restarts the role. Does nothing unless overridden."""

    def handle(self, message: Message) -> None:
        """Handles one message: return to complete it, raise to abandon it
        (it is delivered again). Override this."""
        raise NotImplementedError(f"{type(self).__name__}.handle is not written")

    def run(self) -> None:
        """The ``wasi:cli/run`` export: :meth:`setup`, then the pull loop on
        the VMBus. Returns when the host asks the instance to stop; anything
        else that ends it is logged and fails ``run`` (never a trap), so the
        host restarts the role."""
        self._run_on(_VmBus())

    def _run_on(self, bus: _Bus) -> None:
        """:meth:`run` on ``bus`` (injectable, for the tests)."""
        try:
            if type(self).handle is Worker.handle:
                raise TypeError(
                    f"{type(self).__name__} must define handle(self, message)"
                )
            self.setup()
            if not self.queue:
                raise TypeError(
                    f"{type(self).__name__}.queue is not set: name the queue to pull from"
                )
            self._serve(bus)
        except WeftError as e:
            _wire.log(f"worker on queue `{self.queue}` stopped: {e}")
            raise Err(None) from e
        except Exception as e:
            _wire.log(
                f"worker on queue `{self.queue}` stopped:\n{traceback.format_exc().rstrip()}"
            )
            raise Err(None) from e

    def _serve(self, bus: _Bus) -> None:
        """The pull loop (see the module docs) on ``bus``; returns when the
        host asks the instance to stop, raises the
        :class:`~weft.errors.WeftError` that ended it otherwise."""
        backoff = _Backoff()
        while True:
            try:
                batch = bus.receive(
                    self.queue, self.batch_size, self.visibility_timeout_ms, self.wait_ms
                )
            except WeftError as e:
                if not e.transient:
                    raise
                bus.sleep(backoff.next_delay_ms())
                continue
            if not batch:
                # A host asking the instance to stop hands out nothing more.
                if bus.stopping():
                    return
                # With no wait at all, pace the polling instead of spinning.
                if self.wait_ms == 0:
                    bus.sleep(backoff.next_delay_ms())
                continue
            backoff.reset()
            done: list[Message] = []
            for message in batch:
                try:
                    self.handle(message)
                except Exception:
                    trace = traceback.format_exc().rstrip()
                    _wire.log(
                        f"queue `{self.queue}`: message {message.id} failed on delivery "
                        f"{message.dequeue_count}; abandoning it:\n{trace}"
                    )
                    self._settle(bus, message, abandon=True)
                else:
                    done.append(message)
            self._complete_all(bus, done)

    def _complete_all(self, bus: _Bus, done: list[Message]) -> None:
        """Completes the messages a batch handled in one call, retrying the
        call while it fails transiently; a message the call could not
        complete for a passing reason is then settled on its own, and one
        whose lease lapsed is logged and left (see :meth:`_settle`)."""
        if not done:
            return
        backoff = _Backoff()
        while True:
            try:
                outcomes = bus.complete_batch(self.queue, done)
                break
            except WeftError as e:
                if not e.transient:
                    raise
                bus.sleep(backoff.next_delay_ms())
        answered = iter(outcomes)
        for message in done:
            # A host answering fewer outcomes than receipts: the rest are
            # settled one by one.
            outcome = next(answered, _UNANSWERED)
            if outcome is None:
                continue
            if isinstance(outcome, NotFound):
                self._lapsed(message, outcome)
            elif isinstance(outcome, WeftError) and not outcome.transient:
                raise outcome
            else:
                self._settle(bus, message, abandon=False)

    def _lapsed(self, message: Message, error: NotFound) -> None:
        """Logs a settle refused because the message's lease lapsed first."""
        _wire.log(
            f"queue `{self.queue}`: could not settle message {message.id} "
            f"({error.reason}); its lease lapsed and it will be delivered again"
        )

    def _settle(self, bus: _Bus, message: Message, *, abandon: bool) -> None:
        """Completes or abandons ``message``, retrying transient failures. A
        lapsed lease (NotFound) is logged and ignored: the message comes back."""
        backoff = _Backoff()
        while True:
            try:
                if abandon:
                    bus.abandon(self.queue, message, self.retry_delay_ms)
                else:
                    bus.complete(self.queue, message)
                return
            except NotFound as e:
                self._lapsed(message, e)
                return
            except WeftError as e:
                if not e.transient:
                    raise
                bus.sleep(backoff.next_delay_ms())
