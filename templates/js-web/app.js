/**
 * {{name}}'s web role: `GET /` answers the `greeting` setting, `POST /echo`
 * echoes the request's body. Each request runs in a fresh sandbox.
 */

import { config, json, lifecycleHooks, serve } from "weft";

serve(async (request) => {
  const { pathname } = new URL(request.url);
  if (pathname === "/" && request.method === "GET") {
    return new Response(`${config.get("greeting") ?? "Hello from {{name}}!"}\n`, {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  }
  if (pathname === "/echo" && request.method === "POST") {
    return new Response(await request.arrayBuffer(), {
      headers: { "content-type": request.headers.get("content-type") ?? "application/octet-stream" },
    });
  }
  return json({ error: "not found" }, 404);
});

// Lifecycle hooks that do nothing; see lifecycleHooks({start, stop}) in the SDK.
export const hooks = lifecycleHooks();
