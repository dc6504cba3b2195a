"""An instance's lifecycle, in the manner of the classic cloud fabric's role
entry point (OnStart, Run, OnStop).

The host moves every instance through starting, ready, draining and stopped
(or failed). When it asks an instance to stop (an upgrade, a scale-down, a
settings change, shutdown), :func:`stopping` answers True and
``queue.receive`` returns nothing, at once; :class:`weft.Worker` finishes the
batch it holds and returns.

Every Python role exports the lifecycle hooks (the SDK builds the worlds
``web-role-with-hooks`` and ``worker-role-with-hooks``). componentize-py
looks for a class named ``Hooks`` in ``app.py``: write ``from weft import
Hooks`` for hooks that do nothing, or subclass it::

    class Hooks(weft.Hooks):
        def start(self) -> None:
            weft.kv.Bucket.open("state").set("started", "yes")

        def stop(self) -> None:
            print("goodbye", flush=True)

``start`` runs before the instance is ready (for a web role, once per
version, before it takes traffic); an exception in it refuses the start and
its message is what the host logs. ``stop`` runs when the instance winds
down, within the role's ``stop-grace-ms``; an exception in it is logged
(the WIT's ``stop`` cannot fail). Pass ``flush=True`` to ``print`` in a hook:
the instance may end before a buffer is written.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from componentize_py_types import Err
from wit_world.imports import lifecycle as _wit

from . import _wire

__all__ = ["stopping", "Hooks"]

#: Set on the SDK's wrappers, so a class that inherits one is not wrapped twice.
_GUARDED = "_weft_guarded"


def stopping() -> bool:
    """Whether the host has asked this instance to stop. Always False in a
    web role's request: a request is bounded by its deadline instead."""
    return bool(_wit.stopping())


def _guarded(hook: Callable[[Any], None], wrapped: Callable[[Any], None]) -> Callable[[Any], None]:
    wrapped.__name__ = getattr(hook, "__name__", "hook")
    wrapped.__qualname__ = getattr(hook, "__qualname__", wrapped.__name__)
    wrapped.__doc__ = getattr(hook, "__doc__", None)
    setattr(wrapped, _GUARDED, True)
    return wrapped


def _refusing_start(start: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wraps a role's ``start`` so that any exception becomes the
    ``Err(str)`` the WIT asks for, carrying the exception's message."""

    def start_hook(self: Any) -> None:
        try:
            start(self)
        except Err:
            # Already the WIT's answer (from a base class's guarded start).
            raise
        except Exception as e:
            why = f"{type(e).__name__}: {e}"
            _wire.log(f"start hook failed: {why}")
            raise Err(why) from e

    return _guarded(start, start_hook)


def _quiet_stop(stop: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wraps a role's ``stop`` so that an exception is logged: the WIT's
    ``stop`` cannot fail, and a raise there would trap the instance."""

    def stop_hook(self: Any) -> None:
        try:
            stop(self)
        except Exception:
            _wire.log(f"stop hook failed:\n{traceback.format_exc().rstrip()}")

    return _guarded(stop, stop_hook)


class Hooks:
    """The ``hooks`` export: ``start`` and ``stop`` that do nothing. A
    subclass overrides either; an exception raised by its ``start`` refuses
    the start with the exception's message, one raised by its ``stop`` is
    logged."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, guard in (("start", _refusing_start), ("stop", _quiet_stop)):
            hook = cls.__dict__.get(name)
            if hook is not None and not getattr(hook, _GUARDED, False):
                setattr(cls, name, guard(hook))

    def start(self) -> None:
        """Prepares the instance; raise to keep it from becoming ready."""

    def stop(self) -> None:
        """Winds the instance down, within the role's stop grace period."""
