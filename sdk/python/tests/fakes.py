"""Stand-ins for the bindings componentize-py generates (``wit_world`` and
``componentize_py_types``), shaped like the generated ones (the same class
names and call signatures), with scripted answers for the unit tests."""

from __future__ import annotations

import sys
import types
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import fake_http
from .fake_types import Err, Ok


def _variant(name: str, payload: bool = True) -> type:
    fields = {"__annotations__": {"value": str}} if payload else {}
    return dataclass(type(name, (), fields))


# weft:vmbus/types (named `types` in the worker world, `weft_vmbus_types` in the web world).
vmbus_types = types.ModuleType("wit_world.imports.types")
for _name in ["TooLarge", "Denied", "NotFound", "Unavailable", "Invalid"]:
    setattr(vmbus_types, f"Error_{_name}", _variant(f"Error_{_name}"))
vmbus_types.Error_RateLimited = _variant("Error_RateLimited", payload=False)

kv_store = types.ModuleType("wit_world.imports.wasi_keyvalue_store")
kv_store.Error_NoSuchStore = _variant("Error_NoSuchStore", payload=False)
kv_store.Error_AccessDenied = _variant("Error_AccessDenied", payload=False)
kv_store.Error_Other = _variant("Error_Other")

config_store = types.ModuleType("wit_world.imports.wasi_config_store")
config_store.Error_Upstream = _variant("Error_Upstream")
config_store.Error_Io = _variant("Error_Io")


@dataclass
class KeyResponse:
    """As the generated ``wasi_keyvalue_store.KeyResponse``."""

    keys: list[str]
    cursor: int | None


kv_store.KeyResponse = KeyResponse


class FakeBucket:
    """A bucket whose calls answer from a dict, or raise ``fail`` when set.
    ``list_keys`` answers from ``pages`` when set; else, as the host does, in
    pages of ``page_size`` keys whose cursor is an offset into the keys
    there at the time of the call."""

    def __init__(self, page_size: int = 1_000) -> None:
        self.data: dict[str, bytes] = {}
        self.fail: Exception | None = None
        self.pages: dict[int | None, KeyResponse] | None = None
        self.page_size = page_size

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def get(self, key: str) -> bytes | None:
        self._check()
        return self.data.get(key)

    def set(self, key: str, value: bytes) -> None:
        self._check()
        assert isinstance(value, bytes)
        self.data[key] = value

    def delete(self, key: str) -> None:
        self._check()
        self.data.pop(key, None)

    def exists(self, key: str) -> bool:
        self._check()
        return key in self.data

    def list_keys(self, cursor: int | None) -> KeyResponse:
        self._check()
        if self.pages is not None:
            return self.pages[cursor]
        start = cursor or 0
        end = start + self.page_size
        live = sorted(self.data)
        return KeyResponse(live[start:end], end if end < len(live) else None)


buckets: dict[str, FakeBucket] = {}


def _open(name: str) -> FakeBucket:
    if name not in buckets:
        raise Err(kv_store.Error_AccessDenied())
    return buckets[name]


kv_store.open = _open
config_store.settings = {}
config_store.get = lambda key: config_store.settings.get(key)
config_store.get_all = lambda: list(config_store.settings.items())

# weft:vmbus/queue: every call is recorded in `calls` and answered from `answers`.
queue_mod = types.ModuleType("wit_world.imports.queue")


@dataclass
class SendOptions:
    """As the generated ``queue.SendOptions``."""

    initial_invisibility_ms: int
    time_to_live_ms: int
    dedupe_id: str | None


@dataclass
class WireMessage:
    """As the generated ``queue.Message``."""

    id: str
    body: bytes
    dequeue_count: int
    inserted_at_ms: int
    receipt: str
    poison_reason: str | None


@dataclass
class WirePeeked:
    """As the generated ``queue.Peeked``."""

    id: str
    body: bytes
    dequeue_count: int
    inserted_at_ms: int
    poison_reason: str | None


queue_mod.SendOptions = SendOptions
queue_mod.Message = WireMessage
queue_mod.Peeked = WirePeeked
queue_mod.calls = []
queue_mod.answers = deque()


def _queue_call(name: str):
    def call(*args: Any) -> Any:
        queue_mod.calls.append((name, *args))
        answer = queue_mod.answers.popleft() if queue_mod.answers else None
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return call


for _name in [
    "send",
    "receive",
    "complete",
    "complete_batch",
    "abandon",
    "extend",
    "length",
    "peek",
]:
    setattr(queue_mod, _name, _queue_call(_name))

lifecycle_mod = types.ModuleType("wit_world.imports.lifecycle")
lifecycle_mod.stopping = lambda: False
usage_mod = types.ModuleType("wit_world.imports.usage")


def install() -> None:
    """Puts the stand-ins in ``sys.modules`` (before ``weft`` is imported)."""
    cpt = types.ModuleType("componentize_py_types")
    cpt.Err = Err
    cpt.Ok = Ok
    world = types.ModuleType("wit_world")
    world.__path__ = []
    imports = types.ModuleType("wit_world.imports")
    imports.__path__ = []
    world.imports = imports
    modules = {
        "types": vmbus_types,
        "queue": queue_mod,
        "wasi_keyvalue_store": kv_store,
        "wasi_config_store": config_store,
        "lifecycle": lifecycle_mod,
        "usage": usage_mod,
        "wasi_http_types": fake_http,
    }
    sys.modules["componentize_py_types"] = cpt
    sys.modules["wit_world"] = world
    sys.modules["wit_world.imports"] = imports
    for name, module in modules.items():
        setattr(imports, name, module)
        sys.modules[f"wit_world.imports.{name}"] = module
