"""A stand-in for the generated ``wasi_http_types`` bindings: just the
resources a web role's handler touches, recording what it writes and
enforcing the rules the real host enforces (writes of at most 4096 bytes, a
stream dropped before its body is finished, a response set once). Setting
``OutputStream.broken`` or ``OutgoingBody.broken`` makes writes or
``finish`` fail as they do when the client has gone away."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .fake_types import Err


@dataclass
class Method_Get:
    pass


@dataclass
class Method_Post:
    pass


@dataclass
class Method_Other:
    value: str


@dataclass
class StreamError_Closed:
    pass


@dataclass
class StreamError_LastOperationFailed:
    pass


@dataclass
class HeaderError_InvalidSyntax:
    pass


class _Resource:
    dropped = False

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.dropped = True


class Fields(_Resource):
    def __init__(self, entries: list[tuple[str, bytes]] | None = None) -> None:
        self._entries = list(entries or [])

    @classmethod
    def from_list(cls, entries: list[tuple[str, bytes]]) -> Fields:
        for name, value in entries:
            if not name or " " in name or b"\n" in value:
                raise Err(HeaderError_InvalidSyntax())
        return cls(entries)

    def entries(self) -> list[tuple[str, bytes]]:
        return list(self._entries)


class InputStream(_Resource):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    def blocking_read(self, length: int) -> bytes:
        if not self.chunks:
            raise Err(StreamError_Closed())
        chunk = self.chunks.pop(0)
        if isinstance(chunk, BaseException):
            raise chunk
        return chunk[:length]


class IncomingBody(_Resource):
    finished = False

    def __init__(self, chunks: list[bytes]) -> None:
        self._stream = InputStream(chunks)

    def stream(self) -> InputStream:
        return self._stream

    @classmethod
    def finish(cls, this: IncomingBody) -> None:
        assert this._stream.dropped, "the body's stream must be dropped before finish"
        this.finished = True


class IncomingRequest(_Resource):
    def __init__(
        self, method: Any, path: str | None, headers: list[tuple[str, bytes]], chunks: list[bytes]
    ) -> None:
        self._method = method
        self._path = path
        self._headers = Fields(headers)
        self.body = IncomingBody(chunks)
        self.consumed = False

    def method(self) -> Any:
        return self._method

    def path_with_query(self) -> str | None:
        return self._path

    def headers(self) -> Fields:
        return self._headers

    def consume(self) -> IncomingBody:
        assert not self.consumed
        self.consumed = True
        return self.body


@dataclass
class ErrorCode_ConnectionTerminated:
    pass


class OutputStream(_Resource):
    #: Writes fail (the client went away).
    broken = False

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def blocking_write_and_flush(self, contents: bytes) -> None:
        assert len(contents) <= 4096, f"a write of {len(contents)} bytes"
        if self.broken:
            raise Err(StreamError_LastOperationFailed())
        self.writes.append(bytes(contents))


class OutgoingBody(_Resource):
    #: `finish` fails (the client went away).
    broken = False

    def __init__(self) -> None:
        self.stream = OutputStream()
        self.finished = False

    def write(self) -> OutputStream:
        return self.stream

    @classmethod
    def finish(cls, this: OutgoingBody, trailers: Any) -> None:
        assert this.stream.dropped, "the stream must be dropped before finish"
        if this.broken:
            raise Err(ErrorCode_ConnectionTerminated())
        this.finished = True


class OutgoingResponse(_Resource):
    def __init__(self, headers: Fields) -> None:
        self.headers = headers
        self.status = 200
        self.out_body = OutgoingBody()

    def set_status_code(self, status: int) -> None:
        self.status = status

    def body(self) -> OutgoingBody:
        return self.out_body


class ResponseOutparam(_Resource):
    def __init__(self) -> None:
        self.response: OutgoingResponse | None = None

    @classmethod
    def set(cls, param: ResponseOutparam, response: Any) -> None:
        assert param.response is None, "a response may be set once"
        param.response = response.value
