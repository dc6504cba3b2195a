"""A hello-world web role in Python for `weft-bench polyglot`: it answers
every request with "Hello, world!\n". It targets `wasi:http/proxy` alone
(no Weft SDK, no VMBus), so `wasmtime serve` runs the very same component
as Weft does; `benches/polyglot.sh` builds it with componentize-py."""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

HELLO = b"Hello, world!\n"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        response = OutgoingResponse(
            Fields.from_list([("content-type", b"text/plain; charset=utf-8")])
        )
        response.set_status_code(200)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        # The body's resources are dropped before `finish`, as wasi:http
        # requires: the `with` closes the stream.
        with body.write() as stream:
            stream.blocking_write_and_flush(HELLO)
        OutgoingBody.finish(body, None)
