/**
 * Weft's JavaScript SDK: write Weft roles in JavaScript.
 *
 * ## Concepts
 *
 * Weft hosts WebAssembly components as *roles* of a *service* (one
 * `weft.toml`). A role's only way out of its sandbox is the *VMBus*: queues
 * (`queue`), key-value buckets (`kv`), its settings (`config`), figures of
 * its own use of the machine (`usage`) and its lifecycle (`stopping`,
 * `lifecycleHooks`). It may use only the queues and buckets its manifest
 * lists. Failed calls throw `WeftError` subclasses (errors.js); `transient`
 * says whether retrying later may help.
 *
 * ## Web role
 *
 * A web role answers HTTP. Each request runs in a fresh sandbox:
 *
 *     import { serve, json, config, lifecycleHooks } from "weft";
 *     serve((request) => json({ greeting: config.get("greeting") ?? "hello" }));
 *     export const hooks = lifecycleHooks();
 *
 * ## Worker role
 *
 * A worker role has no outside contact: it pulls messages from its queues
 * and runs until the host asks it to stop. `worker()` runs the pull loop
 * (receive, handle, complete or abandon, back off, stop):
 *
 *     import { worker, kv, lifecycleHooks } from "weft";
 *     export const run = worker("tasks", (message) => {
 *       const results = kv.Bucket.open("results");
 *       results.set(message.id, String(message.text().split(/\s+/).length));
 *     });
 *     export const hooks = lifecycleHooks();
 *
 * Every role exports `hooks` (the SDK builds the worlds
 * `weft:vmbus/web-role-with-hooks` and `worker-role-with-hooks`); the line
 * above gives hooks that do nothing, `lifecycleHooks({start, stop})` real
 * ones.
 *
 * ## The VMBus from JavaScript
 *
 * The SDK wraps the WIT imports (`weft:vmbus/queue@0.1.0`,
 * `wasi:keyvalue/store@0.2.0-draft`...), which componentize-js binds as
 * synchronous functions; a role may import them directly too. The SDK's
 * functions are synchronous; handlers and hooks may be async.
 *
 * Call the VMBus from handlers and hooks, never at a module's top level:
 * the build runs the top level once, ahead of time (to snapshot the
 * engine), where no VMBus exists, and fails ("attempted to call an unknown
 * imported function").
 *
 * ## Building
 *
 *     npm ci --prefix <weft>/sdk/js          # once
 *     node <weft>/sdk/js/build.mjs web app.js app.wasm
 *     node <weft>/sdk/js/build.mjs worker app.js app.wasm
 *
 * The build bundles `app.js` with this SDK (imported as `"weft"`) and makes
 * a component with componentize-js (StarlingMonkey, a SpiderMonkey build
 * for WASI); see build.mjs.
 */

export * as config from "./config.js";
export {
  AccessDenied,
  BucketFull,
  ConfigError,
  Denied,
  fromWit,
  Invalid,
  KvError,
  NoSuchBucket,
  NotFound,
  RateLimited,
  TooLarge,
  Unavailable,
  WeftError,
} from "./errors.js";
export * as kv from "./kv.js";
export { lifecycleHooks, stopping } from "./lifecycle.js";
export * as queue from "./queue.js";
export { Message, Peeked } from "./queue.js";
export * as usage from "./usage.js";
export { json, serve } from "./web.js";
export { worker } from "./worker.js";
