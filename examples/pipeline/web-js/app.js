/**
 * The pipeline's web role in JavaScript: the same HTTP behaviour, byte for
 * byte, as the Rust role in `../web/src/lib.rs`, so either can serve beside
 * the Rust worker role.
 *
 * - `POST /jobs` with a UTF-8 text body (1 byte to 64 KiB) records the job
 *   as `pending` in the key-value bucket `jobs`, queues it on the queue
 *   `jobs` for the worker role, and answers `202 Accepted` with
 *   `{"id":..,"status":"pending"}` and `location: /jobs/{id}`.
 * - `GET /jobs/{id}` answers the job's record as the worker left it:
 *   `pending`, `done` with its `result`, or `failed` with its `reason`.
 *
 * VMBus failures that may pass (queue rate limits and outages, key-value
 * backend errors) answer `503` with `retry-after: 1`. A full `jobs` bucket
 * does not pass by itself (its records expire after their time to live, or
 * an operator purges it), so it answers `507` with `{"error":"job store
 * full","reason":...}`. Other failures (a bucket or queue the manifest does
 * not grant) answer `500`.
 *
 * JSON bodies list their keys in sorted order with no spaces, as the Rust
 * role's serde_json writes them, so both roles' answers are identical.
 *
 * Build: `node ../../../sdk/js/build.mjs web app.js app.wasm` (from this folder).
 */

import { BucketFull, json, KvError, kv, lifecycleHooks, queue, serve, TooLarge, WeftError } from "weft";

/** The largest job text accepted, in bytes. */
const MAX_TEXT = 64 * 1024;

serve(async (request) => {
  const segments = rawPath(request.url).replace(/^\/+/, "").split("/");
  const [first, id] = segments;
  if (first === "jobs" && segments.length === 1) {
    return request.method === "POST" ? submit(request) : methodNotAllowed("POST");
  }
  if (first === "jobs" && segments.length === 2 && id !== "") {
    return request.method === "GET" ? status(id) : methodNotAllowed("GET");
  }
  return json({ error: "not found" }, 404);
});

/**
 * The path of `url` as the client sent it, without the query: what the Rust
 * role's `request.uri().path()` is. Not `new URL(url).pathname`, which
 * resolves `..` and `%2e%2e` segments, so `POST /x/../jobs` would reach
 * `/jobs` here and 404 there. StarlingMonkey's `request.url` keeps the path
 * as it came.
 */
function rawPath(url) {
  const path = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*([^?#]*)/i.exec(url)?.[1] ?? "";
  return path === "" ? "/" : path;
}

/** `POST /jobs`: validate the text, record the job, queue it. */
async function submit(request) {
  const text = await readText(request);
  if (typeof text !== "string") {
    return json({ error: text.reason }, text.status);
  }
  const id = newJobId();
  const pending = { id, status: "pending" };

  let jobs;
  try {
    jobs = kv.Bucket.open("jobs");
    jobs.set(id, JSON.stringify(pending));
  } catch (error) {
    return kvFailure(error);
  }
  try {
    queue.send("jobs", JSON.stringify({ id, text }));
  } catch (error) {
    // The job will never run: forget it rather than leave it pending.
    try {
      jobs.delete(id);
    } catch (deleteError) {
      console.error(`pipeline-web: could not forget job ${id}: ${deleteError.message}`);
    }
    return queueFailure(error);
  }
  return json(pending, 202, { location: `/jobs/${id}` });
}

/**
 * The body as UTF-8 text of 1 byte to `MAX_TEXT`, or `{status, reason}`
 * saying why not. Stops reading once the body passes the limit.
 */
async function readText(request) {
  const tooLarge = { status: 413, reason: "body over 64 KiB" };
  const declared = request.headers.get("content-length");
  if (declared !== null && !(Number(declared) <= MAX_TEXT)) {
    return tooLarge;
  }
  const chunks = [];
  let size = 0;
  try {
    if (request.body) {
      const reader = request.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.length;
        if (size > MAX_TEXT) {
          return tooLarge;
        }
        chunks.push(value);
      }
    }
  } catch {
    return { status: 400, reason: "could not read the body" };
  }
  if (size === 0) {
    return { status: 400, reason: "empty body: send the text to analyse" };
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return { status: 400, reason: "body is not UTF-8 text" };
  }
}

/** `GET /jobs/{id}`: the stored record, as the worker left it. */
function status(id) {
  let record;
  try {
    record = kv.Bucket.open("jobs").get(id);
  } catch (error) {
    return kvFailure(error);
  }
  if (record === undefined) {
    return json({ error: "no such job" }, 404);
  }
  return new Response(record, { status: 200, headers: { "content-type": "application/json" } });
}

/** A random 128-bit id, in lowercase hex. */
function newJobId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function methodNotAllowed(allow) {
  return json({ error: "method not allowed" }, 405, { allow });
}

function queueFailure(error) {
  console.error(`pipeline-web: queueing a job failed: ${error.message ?? error}`);
  if (error instanceof WeftError && error.transient) return unavailable();
  if (error instanceof TooLarge) return json({ error: "job too large once encoded" }, 413);
  return internalError();
}

function kvFailure(error) {
  console.error(`pipeline-web: key-value call failed: ${error.message ?? error}`);
  if (error instanceof BucketFull) return json({ error: "job store full", reason: error.reason }, 507);
  // Backend trouble (an outage, a rate limit) may pass.
  if (error instanceof KvError && error.transient) return unavailable();
  return internalError();
}

function unavailable() {
  return json({ error: "busy; retry shortly" }, 503, { "retry-after": "1" });
}

function internalError() {
  return json({ error: "internal error" }, 500);
}

export const hooks = lifecycleHooks();
