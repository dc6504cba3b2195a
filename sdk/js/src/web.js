/**
 * Web roles: `serve(handler)` answers each HTTP request the host passes in
 * with the standard `fetch` event of the browser and service-worker world
 * (StarlingMonkey's `wasi:http/incoming-handler`).
 *
 *     serve(async (request) => {
 *       const url = new URL(request.url);
 *       if (url.pathname === "/") return new Response("hello\n");
 *       return json({ error: "not found" }, 404);
 *     });
 *
 * Each request runs in a fresh sandbox bounded by the role's deadline, fuel
 * and memory; nothing survives from one request to the next except what
 * the role stores in a bucket or a queue.
 */

import { describe } from "./errors.js";

/**
 * Answers every request with `handler`. Call it once, at module level.
 * A handler that throws (or returns something other than a `Response`)
 * answers 500 `{"error":"internal error"}`, and the error goes to stderr.
 *
 * @param {(request: Request) => Response | Promise<Response>} handler
 */
export function serve(handler) {
  addEventListener("fetch", (event) => event.respondWith(respond(handler, event.request)));
}

/**
 * `handler`'s answer to `request`, or a 500 if it failed (see `serve`).
 *
 * @param {(request: Request) => Response | Promise<Response>} handler
 * @param {Request} request
 * @returns {Promise<Response>}
 */
export async function respond(handler, request) {
  try {
    const response = await handler(request);
    if (!(response instanceof Response)) {
      throw new TypeError(`the handler returned ${typeof response}, not a Response`);
    }
    return response;
  } catch (error) {
    console.error(`weft: ${request.method} ${request.url} failed: ${describe(error)}`);
    return json({ error: "internal error" }, 500);
  }
}

/**
 * A JSON response: `body` serialised with `JSON.stringify`, with
 * `content-type: application/json` and any other `headers`.
 *
 * @param {any} body
 * @param {number} [status=200]
 * @param {Record<string, string>} [headers={}]
 * @returns {Response}
 */
export function json(body, status = 200, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}
