/**
 * An instance's lifecycle, in the manner of the classic cloud fabric's role
 * entry point (OnStart, Run, OnStop).
 *
 * The host moves every instance through starting, ready, draining and
 * stopped (or failed). It asks an instance to stop when its role is
 * upgraded, scaled down, reconfigured or shut down: from then on
 * `stopping()` answers true and `queue.receive` returns no messages, at
 * once. `worker()` handles this for you: it finishes the batch it holds and
 * returns, so the instance stops cleanly.
 *
 * Every JavaScript role exports the two hooks (the SDK builds the worlds
 * `*-role-with-hooks`), made by `lifecycleHooks`:
 *
 * - `start` runs before the instance is ready: for a worker, in the
 *   instance before `run`; for a web role, once per version of the role,
 *   before that version takes any request. Throw to refuse to start (a
 *   worker instance is restarted with backoff; a web version never takes
 *   traffic, and an upgrade to it is rolled back).
 * - `stop` runs when the instance winds down: for a worker, after `run`
 *   returned; for a web role, once the version has drained. The host bounds
 *   it by the role's `stop-grace-ms`.
 *
 *     export const hooks = lifecycleHooks({
 *       start() { kv.Bucket.open("state").set("started", "yes"); },
 *       stop() { console.error("goodbye"); },
 *     });
 */

import { bus } from "./bus.js";
import { describe } from "./errors.js";

/**
 * Whether the host has asked this instance to stop. Always false in a web
 * role's request: a request is bounded by its deadline instead.
 *
 * @returns {boolean}
 */
export function stopping() {
  return bus.lifecycle.stopping();
}

/**
 * The `hooks` export object for the role's module: `export const hooks =
 * lifecycleHooks({start, stop});`. Both are optional and default to doing
 * nothing; they may be async.
 *
 * An exception (or rejection) in `start` becomes the error string the WIT
 * asks for (`result<_, string>`), which the host logs and acts on; one in
 * `stop` is logged to stderr.
 *
 * @param {object} [hooks]
 * @param {() => void | Promise<void>} [hooks.start] prepares the instance; throw to refuse to start
 * @param {() => void | Promise<void>} [hooks.stop] winds the instance down
 * @returns {{start: () => Promise<void>, stop: () => Promise<void>}}
 */
export function lifecycleHooks({ start, stop } = {}) {
  return {
    async start() {
      try {
        await start?.();
      } catch (error) {
        // The WIT's error type is a string: componentize-js lowers a thrown
        // value as the `err` case, so throw the message itself.
        throw error instanceof Error ? error.message || String(error) : String(error);
      }
    },
    async stop() {
      try {
        await stop?.();
      } catch (error) {
        console.error(`weft: the stop hook failed: ${describe(error)}`);
      }
    },
  };
}
