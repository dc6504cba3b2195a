"""{{name}}'s web role: answers `GET /` with the setting `greeting` and
echoes the body of `POST /echo`. Built by the `build` line in weft.toml."""

import weft
from weft import Hooks  # noqa: F401  (the lifecycle hooks every Python role exports; no-ops)
from weft.web import Request, Response


class IncomingHandler(weft.web.Handler):
    """The wasi:http handler: one respond call per request."""

    def respond(self, request: Request) -> Response:
        """Routes one request."""
        if request.method == "GET" and request.path == "/":
            return Response((weft.config.get("greeting") or "Hello from {{name}}!") + "\n")
        if request.method == "POST" and request.path == "/echo":
            content_type = request.header("content-type") or "application/octet-stream"
            return Response(request.body, headers={"content-type": content_type})
        return Response("not found\n", status=404)
