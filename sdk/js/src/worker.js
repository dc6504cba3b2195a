/**
 * `worker()`: the `run` export of a worker role, as the Rust SDK's `Worker`.
 *
 * The host calls the role's `run` export (the standard `wasi:cli/run`) and
 * restarts the instance when it returns an error. `worker(queue, handler)`
 * makes that export; its `run` loops (pull.js):
 *
 * 1. receive a batch from the queue (waiting for one if the queue is empty);
 * 2. call the handler on each message, awaiting it if it returns a promise,
 *    and abandon a message at once (visible again after `retryDelayMs`),
 *    logging the error to stderr, if the handler threw, so it is delivered
 *    again;
 * 3. once the whole batch is handled, complete the messages whose handler
 *    returned with `completeBatch`: one host call for the batch, so the
 *    role's queue rate limit counts one call per batch, not one per
 *    message.
 *
 * A message is so completed only after the rest of its batch is handled:
 * if the instance dies mid-batch, the messages it handled but had not
 * completed are delivered again (delivery is at least once anyway). The
 * visibility timeout must cover the whole batch, as it always had to.
 *
 * When the host asks the instance to stop, `receive` returns nothing and
 * `stopping()` says so: the loop, having settled the batch it held, returns
 * and `run` returns `ok`.
 *
 * When the host answers `RateLimited` or `Unavailable`, the worker sleeps
 * (50 ms, doubling up to 2 s) and retries: a receive, an abandon, or the
 * batch's completion call as a whole; a message that call answers with a
 * transient error is then completed on its own, with the same retries. Any
 * other error from receive, or from settling a message, ends the loop: `run` logs it to stderr and
 * returns `err` (the host records "guest exited with status 1" and
 * restarts the role). A settle that fails with `NotFound` means the lease
 * lapsed first; the message will be delivered again, so the worker logs it
 * and carries on.
 *
 * Handlers may be async: componentize-js runs the component's event loop
 * until a promise returned by an export settles, so `run` awaits the
 * handler (and sleeps its backoff with `setTimeout`) while the host waits
 * in its call to `run`. A handler that loops forever is the host's
 * business: it interrupts the instance, the lease lapses and the message
 * comes back.
 */

import { describe, WeftError } from "./errors.js";
import { pull } from "./pull.js";

/**
 * The `run` export of a worker role that pulls from `queue` and calls
 * `handler` on each message: `export const run = worker("tasks", handle);`.
 *
 * @param {string} queue a queue the manifest lists
 * @param {(message: import("./queue.js").Message) => void | Promise<void>} handler
 *   handles one message; return (or resolve) to complete it, throw (or reject) to abandon it
 * @param {object} [options]
 * @param {number} [options.batchSize=8] the most messages per receive (1 to 32)
 * @param {number} [options.visibilityTimeoutMs=30000] each message's lease; make it
 *   comfortably longer than the handler takes for a whole batch
 * @param {number} [options.waitMs=20000] how long one receive waits when the queue is empty
 * @param {number} [options.retryDelayMs=0] how long a failed message stays invisible
 *   before it is delivered again
 * @returns {{run: () => Promise<void | {tag: "err"}>}} `run` resolves to nothing
 *   when the host asks the instance to stop, and to `{tag: "err"}` (the
 *   WIT's `result` error) when an error ends the loop
 * @throws {TypeError} if `handler` is not a function
 */
export function worker(queue, handler, { batchSize = 8, visibilityTimeoutMs = 30_000, waitMs = 20_000, retryDelayMs = 0 } = {}) {
  if (typeof handler !== "function") {
    throw new TypeError(`worker("${queue}", handler): handler must be a function, not ${typeof handler}`);
  }
  const options = { maxMessages: batchSize, visibilityTimeoutMs, waitMs, retryDelayMs };
  return {
    async run() {
      try {
        await pull(queue, handler, options);
      } catch (error) {
        // The host sees only that `run` failed; say why, as Rust's `main` does.
        const why = error instanceof WeftError ? error.message : describe(error);
        console.error(`weft: worker on queue \`${queue}\` stopped: ${why}`);
        // Return the WIT's `err` rather than throw: componentize-js turns an
        // exception without a `payload` into a trap, which the host would
        // report as a crash instead of "exited with status 1".
        return { tag: "err" };
      }
    },
  };
}
