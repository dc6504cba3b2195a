"""Web roles: a plain request in, a plain response out.

A web role's ``app.py`` defines the ``IncomingHandler`` export (the standard
``wasi:http/incoming-handler``) as a subclass of :class:`Handler` and writes
``respond``::

    import weft
    from weft import Hooks  # the lifecycle hooks this world exports (no-ops)
    from weft.web import Request, Response

    class IncomingHandler(weft.web.Handler):
        def respond(self, request: Request) -> Response:
            if request.method == "GET" and request.path == "/":
                return Response("hello")
            return Response.json({"error": "not found"}, status=404)

The SDK reads the whole request body (at most :attr:`Handler.max_body_bytes`;
a larger one is answered ``413`` without calling ``respond``), calls your
``respond``, and writes its :class:`Response`. An exception in ``respond``
(an invalid ``Response`` included) is answered ``500``, with the traceback
on stderr (``weft logs``); a failure to send the response (the client went
away) is logged.

``handle`` is the name componentize-py calls, as ``handle(request,
response_out)`` with the wasi:http resources, so it stays the SDK's. A
class may still write ``handle(self, request)`` in place of ``respond``: it
is kept as that class's ``respond`` (a class writing both is a
``TypeError``), and ``super().handle(request)`` in a subclass calls the
base class's ``respond``, never the wasi:http entry point.
"""

from __future__ import annotations

import json as _json
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from componentize_py_types import Err, Ok

from . import _wire

# Imported now, while componentize-py snapshots the program: a worker's
# world has no wasi:http, so there the handler is simply unusable.
try:
    from wit_world.imports import wasi_http_types as _http
except ImportError:
    _http = None

__all__ = ["Request", "Response", "Handler"]

#: The most bytes one ``blocking_write_and_flush`` may carry (wasi:io says 4096).
_MAX_WRITE = 4096

#: How much one read of the request body asks for.
_READ_CHUNK = 65_536


@dataclass(frozen=True)
class Request:
    """An HTTP request, body read in full."""

    #: The method in capitals: "GET", "POST"...
    method: str
    #: The path, without the query: "/jobs/7".
    path: str
    #: The query string without its "?" ("" when there is none).
    query: str = ""
    #: Header values by lowercase name; repeated headers are joined with ", ".
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The body's bytes.
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The header ``name`` (any case), or None."""
        return self.headers.get(name.lower())

    @property
    def args(self) -> dict[str, str]:
        """The query's parameters, the first value of each."""
        return {k: v[0] for k, v in parse_qs(self.query, keep_blank_values=True).items()}

    @property
    def text(self) -> str:
        """The body as UTF-8 text (raises ``UnicodeDecodeError`` if it is not)."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not)."""
        return _json.loads(self.body)


HeaderList = Mapping[str, str] | Iterable[tuple[str, str]]


def _header_list(headers: HeaderList | None, content_type: str | None) -> list[tuple[str, str]]:
    """``headers`` (a mapping, or pairs for repeated names) as pairs, with
    ``content-type: content_type`` added unless they give one."""
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers or [])
    if content_type is not None and not any(k.lower() == "content-type" for k, _ in pairs):
        pairs.append(("content-type", content_type))
    return pairs


class Response:
    """An HTTP response: a status, headers and a body. A ``str`` body is sent
    as UTF-8 with ``content-type: text/plain; charset=utf-8`` unless the
    headers give a content type."""

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: HeaderList | None = None,
    ) -> None:
        """A response with ``body``, ``status`` (an int from 100 to 999,
        else ``ValueError``) and ``headers`` (a mapping, or pairs for
        repeated names)."""
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
            raise ValueError(f"an HTTP status is an int from 100 to 999, not {status!r}")
        text_type = "text/plain; charset=utf-8" if isinstance(body, str) else None
        self.status = status
        self.headers: list[tuple[str, str]] = _header_list(headers, text_type)
        self.body = _wire.as_bytes(body)

    @classmethod
    def json(
        cls, obj: Any, status: int = 200, headers: HeaderList | None = None
    ) -> Response:
        """``obj`` as compact JSON (UTF-8), with ``content-type: application/json``."""
        text = _json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        return cls(text.encode("utf-8"), status, _header_list(headers, "application/json"))

    def __repr__(self) -> str:
        return f"Response(status={self.status}, {len(self.body)} bytes)"


class _TooLarge(Exception):
    """The request body is over the handler's limit."""


#: The default of the entry point's last argument: a call without it comes
#: from a subclass's ``super().handle(request)``, not from the host.
_FROM_CODE: Any = object()


def _entry(owner: type) -> Callable[..., Any]:
    """The wasi:http entry point ``handle`` of the class ``owner``. Called
    with one argument (``super().handle(request)`` from a subclass that
    wrote ``handle``), it answers with ``owner``'s ``respond`` instead."""

    def handle(self: Handler, request: Any, response_out: Any = _FROM_CODE) -> Any:
        if response_out is _FROM_CODE:
            return owner.respond(self, request)
        return self._serve(request, response_out)

    handle.__qualname__ = f"{owner.__qualname__}.handle"
    handle.__doc__ = "The wasi:http entry point (see weft.web); write ``respond``."
    return handle


class Handler:
    """A web role's ``IncomingHandler`` export; see the module docs."""

    #: The largest request body ``respond`` is given; a larger one is
    #: answered 413. (The host's own limit, the manifest's
    #: ``max-request-body-kib``, applies first.)
    max_body_bytes: int = 1024 * 1024

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("handle")
        if own is not None:
            if "respond" in cls.__dict__:
                raise TypeError(
                    f"{cls.__qualname__} defines both handle and respond: "
                    "write respond(self, request) only"
                )
            cls.respond = own  # type: ignore[method-assign]
        # Every class gets its own entry point, so that `super().handle(...)`
        # from a subclass finds this class's `respond`.
        cls.handle = _entry(cls)  # type: ignore[method-assign]

    def respond(self, request: Request) -> Response:
        """The role's logic, to override: answers ``request``. Without it,
        every request is answered 404."""
        return Response("not found\n", status=404)

    def handle(self, request: Any, response_out: Any = _FROM_CODE) -> Any:
        """The wasi:http entry point: reads ``request``, calls :meth:`respond`,
        writes the answer to ``response_out``. Not to override: write
        :meth:`respond`."""
        if response_out is _FROM_CODE:
            return Handler.respond(self, request)
        return self._serve(request, response_out)

    def _serve(self, request: Any, response_out: Any) -> None:
        """Serves one wasi:http request; never raises (a raise would trap)."""
        http = _http
        if http is None:
            raise RuntimeError("weft.web.Handler needs the web-role-with-hooks world")
        try:
            parsed = self._read(http, request)
        except _TooLarge:
            response = Response(
                f"request body over {self.max_body_bytes} bytes\n", status=413
            )
        except Err as e:
            # The client went away or broke off the body.
            _wire.log(f"reading the request failed: {e.value}")
            response = Response("could not read the request body\n", status=400)
        else:
            try:
                response = self.respond(parsed)
                if not isinstance(response, Response):
                    raise TypeError(
                        f"respond returned {type(response).__name__}, not weft.web.Response"
                    )
            except Exception:
                trace = traceback.format_exc().rstrip()
                _wire.log(f"{parsed.method} {parsed.path} failed:\n{trace}")
                response = Response("internal server error\n", status=500)
        _write(http, response, response_out)

    def _read(self, http: Any, request: Any) -> Request:
        """The wasi:http request as a :class:`Request`, body read in full."""
        method = _method_name(request.method())
        path_with_query = request.path_with_query() or "/"
        path, _, query = path_with_query.partition("?")
        headers: dict[str, str] = {}
        with request.headers() as fields:
            for name, value in fields.entries():
                name = name.lower()
                text = bytes(value).decode("latin-1")
                headers[name] = f"{headers[name]}, {text}" if name in headers else text
        declared = headers.get("content-length", "")
        # isdigit alone accepts "²", which int() refuses.
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _TooLarge()
        chunks: list[bytes] = []
        size = 0
        body = request.consume()
        with body.stream() as stream:
            while True:
                try:
                    chunk = stream.blocking_read(_READ_CHUNK)
                except Err as e:
                    if type(e.value).__name__ == "StreamError_Closed":
                        break
                    raise
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise _TooLarge()
                chunks.append(bytes(chunk))
        # The stream (a child of the body) is dropped; now the body may go.
        http.IncomingBody.finish(body)
        return Request(method, path, query, headers, b"".join(chunks))


def _method_name(method: Any) -> str:
    """"GET" for ``Method_Get()``, the value for ``Method_Other("PURGE")``."""
    name = type(method).__name__
    if name == "Method_Other":
        return str(method.value)
    return name.removeprefix("Method_").upper()


def _write(http: Any, response: Response, response_out: Any) -> None:
    """Sends ``response`` through ``response_out``, in writes of at most
    :data:`_MAX_WRITE` bytes. A failure to send (the client went away) is
    logged, as in the Rust SDK: raising here would trap the instance."""
    try:
        fields = http.Fields.from_list(
            [(k, v.encode("latin-1", "replace")) for k, v in response.headers]
        )
    except Err as e:
        _wire.log(f"response headers refused: {e.value}")
        fields = http.Fields.from_list([])
        response = Response("internal server error: bad response headers\n", status=500)
    try:
        outgoing = http.OutgoingResponse(fields)
        outgoing.set_status_code(response.status)
        body = outgoing.body()
        http.ResponseOutparam.set(response_out, Ok(outgoing))
        with body.write() as stream:
            data = response.body
            for start in range(0, len(data), _MAX_WRITE):
                stream.blocking_write_and_flush(data[start : start + _MAX_WRITE])
        http.OutgoingBody.finish(body, None)
    except Err as e:
        _wire.log(f"sending the response failed: {e.value}")
