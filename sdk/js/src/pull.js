/**
 * The pull loop behind `worker()` (worker.js), as the Rust SDK's
 * `Worker::run`: receive, handle, settle, back off, stop. Internal: not
 * re-exported by `index.js`; the unit tests drive it directly.
 */

import { bus } from "./bus.js";
import { describe, NotFound, WeftError } from "./errors.js";
import { stopping } from "./lifecycle.js";
import { abandon, complete, receive } from "./queue.js";
import { millisU32 } from "./wire.js";

/** The first backoff delay after a transient failure, in ms. */
export const BACKOFF_INITIAL_MS = 50;
/** The longest backoff delay, in ms. */
export const BACKOFF_MAX_MS = 2_000;

/** Delays of 50 ms, 100 ms, 200 ms... doubling up to 2 s, until reset. */
class Backoff {
  #next = BACKOFF_INITIAL_MS;

  /** The delay to wait now; the next one is twice as long (capped). */
  next() {
    const delay = this.#next;
    this.#next = Math.min(this.#next * 2, BACKOFF_MAX_MS);
    return delay;
  }

  reset() {
    this.#next = BACKOFF_INITIAL_MS;
  }
}

function isTransient(error) {
  return error instanceof WeftError && error.transient;
}

/**
 * Pulls from `queue` and calls `handler` on each message until the host
 * asks the instance to stop (then resolves), or an error no retry can mend
 * ends it (then rejects with that error).
 *
 * @param {string} queue
 * @param {(message: import("./queue.js").Message) => void | Promise<void>} handler
 * @param {{maxMessages: number, visibilityTimeoutMs: number, waitMs: number, retryDelayMs: number}} options
 * @returns {Promise<void>}
 */
export async function pull(queue, handler, { retryDelayMs, ...receiveOptions }) {
  // Pace on the wait the host is actually sent (0.5 ms rounds down to none).
  const noWait = millisU32(receiveOptions.waitMs, "waitMs") === 0;
  const backoff = new Backoff();
  for (;;) {
    let batch;
    try {
      batch = receive(queue, receiveOptions);
    } catch (error) {
      if (!isTransient(error)) throw error;
      await bus.sleep(backoff.next());
      continue;
    }
    if (batch.length === 0) {
      // A host asking the instance to stop hands out nothing more.
      if (stopping()) return;
      // The host waited `waitMs` for nothing; with no wait at all, pace
      // the polling instead of spinning.
      if (noWait) await bus.sleep(backoff.next());
      continue;
    }
    backoff.reset();
    for (const message of batch) {
      // A flag, not the error itself: a handler may throw `undefined`.
      let failed = false;
      let failure;
      try {
        await handler(message);
      } catch (error) {
        failed = true;
        failure = error;
      }
      if (!failed) {
        await settle(queue, message, () => complete(queue, message));
      } else {
        console.error(
          `weft: queue \`${queue}\`: message ${message.id} failed on delivery ${message.dequeueCount}, abandoning it: ${describe(failure)}`,
        );
        await settle(queue, message, () => abandon(queue, message, retryDelayMs));
      }
    }
  }
}

/**
 * Completes or abandons `message` with `how`, retrying transient failures.
 * A lapsed lease (`NotFound`) is logged and ignored: the message comes back
 * anyway.
 */
async function settle(queue, message, how) {
  const backoff = new Backoff();
  for (;;) {
    try {
      how();
      return;
    } catch (error) {
      if (isTransient(error)) {
        await bus.sleep(backoff.next());
      } else if (error instanceof NotFound) {
        console.error(
          `weft: queue \`${queue}\`: could not settle message ${message.id} (${error.reason}); its lease lapsed and it will be delivered again`,
        );
        return;
      } else {
        throw error;
      }
    }
  }
}
