// A hello-world web role in JavaScript for `weft-bench polyglot`: it answers
// every request with "Hello, world!\n". It targets `wasi:http/proxy` alone
// (no Weft SDK, no VMBus), so `wasmtime serve` runs the very same component
// as Weft does; `benches/polyglot.sh` builds it with componentize-js.

addEventListener("fetch", (event) =>
  event.respondWith(
    new Response("Hello, world!\n", {
      headers: { "content-type": "text/plain; charset=utf-8" },
    }),
  ),
);
