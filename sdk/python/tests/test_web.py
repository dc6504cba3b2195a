"""The web Handler's translation between wasi:http (faked) and
Request/Response."""

from __future__ import annotations

import io
import json
import unittest
from contextlib import redirect_stderr
from dataclasses import dataclass

import weft
from weft.web import Handler, Request, Response

from . import fake_http as http
from .fake_types import Err


class Echo(weft.web.Handler):
    def respond(self, request: Request) -> Response:
        self.seen = request
        if request.path == "/boom":
            raise KeyError("boom")
        if request.path == "/json":
            return Response.json({"ü": request.json(), "args": request.args}, status=201)
        if request.path == "/wrong":
            return "not a response"  # type: ignore[return-value]
        if request.path == "/status":
            return Response("odd", status=int(request.text))
        return Response(request.body, headers=[("x-method", request.method), ("x-a", "1"), ("x-a", "2")])


@dataclass
class Call:
    """What one call of the wasi:http entry point sent, and logged."""

    status: int
    headers: list[tuple[str, bytes]]
    body: bytes
    response: http.OutgoingResponse
    request: http.IncomingRequest
    stderr: str


def call(
    handler: Handler, method, path, chunks=(), headers=(), *, finished=True
) -> Call:
    request = http.IncomingRequest(method, path, list(headers), list(chunks))
    out = http.ResponseOutparam()
    with redirect_stderr(io.StringIO()) as err:
        handler.handle(request, out)
    response = out.response
    assert response is not None, "no response was set"
    assert response.out_body.finished == finished, "the body was (not) finished"
    return Call(
        response.status,
        response.headers.entries(),
        b"".join(response.out_body.stream.writes),
        response,
        request,
        err.getvalue(),
    )


class Translation(unittest.TestCase):
    def test_request_fields_and_body_reach_handle(self) -> None:
        echo = Echo()
        c = call(
            echo,
            http.Method_Post(),
            "/echo?x=1&y=",
            [b"hello ", b"world"],
            [("Content-Type", b"text/plain"), ("X-Many", b"a"), ("x-many", b"b")],
        )
        self.assertEqual((c.status, c.body), (200, b"hello world"))
        self.assertEqual(
            echo.seen,
            Request(
                "POST",
                "/echo",
                "x=1&y=",
                {"content-type": "text/plain", "x-many": "a, b"},
                b"hello world",
            ),
        )
        self.assertEqual(echo.seen.header("X-MANY"), "a, b")
        self.assertEqual(echo.seen.args, {"x": "1", "y": ""})
        self.assertEqual(echo.seen.text, "hello world")
        self.assertEqual(c.headers, [("x-method", b"POST"), ("x-a", b"1"), ("x-a", b"2")])
        self.assertTrue(c.request.body.finished, "the request body was finished")

    def test_other_methods_and_a_missing_path(self) -> None:
        echo = Echo()
        call(echo, http.Method_Other("PURGE"), None)
        self.assertEqual((echo.seen.method, echo.seen.path, echo.seen.query), ("PURGE", "/", ""))

    def test_json_response(self) -> None:
        c = call(Echo(), http.Method_Post(), "/json?q=ü", [b"[1, 2]"])
        self.assertEqual(c.status, 201)
        self.assertIn(("content-type", b"application/json"), c.headers)
        self.assertEqual(json.loads(c.body), {"ü": [1, 2], "args": {"q": "ü"}})
        self.assertEqual(c.body, '{"ü":[1,2],"args":{"q":"ü"}}'.encode())
        r = Response.json([], headers={"Content-Type": "application/problem+json"})
        self.assertEqual(r.headers, [("Content-Type", "application/problem+json")])

    def test_text_bodies_are_utf8_with_a_content_type(self) -> None:
        r = Response("héllo", status=202)
        self.assertEqual((r.status, r.body), (202, "héllo".encode()))
        self.assertEqual(r.headers, [("content-type", "text/plain; charset=utf-8")])
        r = Response("x", headers={"Content-Type": "text/html"})
        self.assertEqual(r.headers, [("Content-Type", "text/html")])

    def test_large_bodies_are_written_in_4096_byte_pieces(self) -> None:
        data = bytes(range(256)) * 100  # 25,600 bytes
        c = call(Echo(), http.Method_Post(), "/", [data[:10_000], data[10_000:]])
        self.assertEqual((c.status, c.body), (200, data))
        writes = c.response.out_body.stream.writes
        self.assertEqual([len(w) for w in writes], [4096] * 6 + [25_600 - 6 * 4096])

    def test_a_body_over_the_limit_is_413_without_calling_handle(self) -> None:
        class Small(Echo):
            max_body_bytes = 10

        small = Small()
        c = call(small, http.Method_Post(), "/", [b"0123456789", b"x"])
        self.assertEqual(c.status, 413)
        self.assertFalse(hasattr(small, "seen"))
        c = call(small, http.Method_Post(), "/", [], [("content-length", b"11")])
        self.assertEqual(c.status, 413)
        self.assertFalse(hasattr(small, "seen"))
        c = call(small, http.Method_Post(), "/", [b"0123456789"])
        self.assertEqual((c.status, c.body), (200, b"0123456789"))
        # A content-length of digits int() refuses ("²") is left to the read.
        c = call(small, http.Method_Post(), "/", [b"01"], [("content-length", "²".encode())])
        self.assertEqual((c.status, c.body), (200, b"01"))

    def test_an_exception_in_handle_is_a_500_with_the_traceback_on_stderr(self) -> None:
        c = call(Echo(), http.Method_Get(), "/boom")
        self.assertEqual((c.status, c.body), (500, b"internal server error\n"))
        self.assertIn("Traceback", c.stderr)
        self.assertIn("KeyError: 'boom'", c.stderr)
        c = call(Echo(), http.Method_Get(), "/wrong")
        self.assertEqual(c.status, 500)
        self.assertIn("not weft.web.Response", c.stderr)

    def test_an_invalid_status_is_a_500(self) -> None:
        for status in [b"99", b"1000", b"-200"]:
            c = call(Echo(), http.Method_Post(), "/status", [status])
            self.assertEqual(c.status, 500)
            self.assertIn("an HTTP status is an int from 100 to 999", c.stderr)
        for status in [True, 200.0, "200"]:
            with self.assertRaises(ValueError):
                Response("x", status=status)  # type: ignore[arg-type]
        self.assertEqual(call(Echo(), http.Method_Post(), "/status", [b"999"]).status, 999)

    def test_a_failure_to_send_the_response_is_logged_not_raised(self) -> None:
        for broken in [http.OutputStream, http.OutgoingBody]:
            broken.broken = True
            try:
                c = call(Echo(), http.Method_Post(), "/", [b"data"], finished=False)
            finally:
                broken.broken = False
            self.assertEqual(c.status, 200, "the head was sent")
            self.assertIn("weft: sending the response failed:", c.stderr)

    def test_a_broken_request_body_is_a_400(self) -> None:
        echo = Echo()
        broken = Err(http.StreamError_LastOperationFailed())
        c = call(echo, http.Method_Post(), "/", [b"part", broken])
        self.assertEqual(c.status, 400)
        self.assertFalse(hasattr(echo, "seen"))

    def test_refused_response_headers_are_a_500(self) -> None:
        class BadHeader(weft.web.Handler):
            def respond(self, request: Request) -> Response:
                return Response("x", headers={"bad name": "v"})

        c = call(BadHeader(), http.Method_Get(), "/")
        self.assertEqual((c.status, c.headers), (500, []))

    def test_a_handler_without_respond_answers_404(self) -> None:
        self.assertEqual(call(Handler(), http.Method_Get(), "/").status, 404)


class HandleOrRespond(unittest.TestCase):
    def test_handle_with_one_argument_is_kept_as_respond(self) -> None:
        class Old(weft.web.Handler):
            def handle(self, request: Request) -> Response:
                return Response("old style")

        self.assertEqual(call(Old(), http.Method_Get(), "/").body, b"old style")

    def test_defining_both_is_a_type_error(self) -> None:
        with self.assertRaises(TypeError) as raised:

            class Both(weft.web.Handler):
                def handle(self, request: Request) -> Response:
                    return Response("a")

                def respond(self, request: Request) -> Response:
                    return Response("b")

        self.assertIn("defines both handle and respond", str(raised.exception))

    def test_super_handle_reaches_the_base_class_logic(self) -> None:
        class Base(weft.web.Handler):
            def handle(self, request: Request) -> Response:
                return Response("base")

        class Loud(Base):
            def handle(self, request: Request) -> Response:
                inner = super().handle(request)
                return Response(inner.body.upper())

        class Louder(Loud):
            def respond(self, request: Request) -> Response:
                return Response(super().handle(request).body + b"!")

        class Plain(weft.web.Handler):
            def handle(self, request: Request) -> Response:
                return super().handle(request)

        self.assertEqual(call(Loud(), http.Method_Get(), "/").body, b"BASE")
        self.assertEqual(call(Louder(), http.Method_Get(), "/").body, b"BASE!")
        self.assertEqual(call(Plain(), http.Method_Get(), "/").status, 404)


if __name__ == "__main__":
    unittest.main()
