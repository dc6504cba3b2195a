"""Weft's Python SDK: write a Weft role in Python, built into a Wasm
component by componentize-py.

Concepts
--------

**Web role.** Serves HTTP. ``app.py`` defines ``IncomingHandler``, a
subclass of :class:`weft.web.Handler` whose ``respond(request)`` returns a
:class:`weft.web.Response`. Each request runs in a sandbox of its own (by
default a fresh one), bounded by the role's deadline, fuel and memory.

**Worker role.** Has no outside contact. ``app.py`` defines ``Run``, a
subclass of :class:`weft.Worker` naming its ``queue``, preparing once in
``setup()`` and handling one :class:`weft.Message` at a time in
``handle(message)``; the SDK's loop receives, completes, abandons and backs
off, and returns when the host asks the instance to stop.

**VMBus.** A role's only way out, granted by its manifest (``weft.toml``):
:mod:`weft.queue` (at-least-once queues with leases), :mod:`weft.kv`
(key-value buckets), :mod:`weft.config` (the role's settings),
:mod:`weft.usage` (what the host measured) and :mod:`weft.lifecycle`
(whether to stop; the ``Hooks`` export). A failed call raises a
:class:`weft.WeftError` subclass (:mod:`weft.errors`).

**Hooks.** Python roles always export the lifecycle hooks; ``app.py`` must
have a class ``Hooks``: ``from weft import Hooks`` (no-ops), or a subclass
with ``start``/``stop``.

**Building.** From the service folder (where ``weft.toml`` is)::

    componentize-py -d WEFT/wit -w weft:vmbus/worker-role-with-hooks \\
        componentize -p WEFT/sdk/python -p . app -o app.wasm

(``web-role-with-hooks`` for a web role; ``WEFT`` is Weft's source folder),
which is the manifest's ``build`` line; ``weft up`` runs it.
"""

from . import config, errors, kv, lifecycle, queue, usage, web, worker
from .errors import (
    AccessDenied,
    BucketFull,
    ConfigError,
    Denied,
    Invalid,
    KeyValueError,
    NoSuchBucket,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    WeftError,
)
from .kv import Bucket
from .lifecycle import Hooks
from .queue import Message, Peeked
from .worker import Worker

__all__ = [
    "config",
    "errors",
    "kv",
    "lifecycle",
    "queue",
    "usage",
    "web",
    "worker",
    "Bucket",
    "Hooks",
    "Message",
    "Peeked",
    "Worker",
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
]
