/**
 * The pull loop behind `worker()` (worker.js), as the Rust SDK's
 * `Worker::run`: receive, handle, settle, back off, stop. Internal: not
 * re-exported by `index.js`; the unit tests drive it directly.
 *
 * A failed message is abandoned at once; the messages the handler took
 * are completed together once the whole batch is handled, in one
 * `completeBatch` call, so the role's queue rate limit counts one call per
 * batch rather than one per message. That call is retried as a whole while
 * it fails transiently; a message it answers with a transient error is
 * then completed on its own, one whose lease lapsed (`NotFound`) is logged
 * and left, and any other error ends the loop.
 */

import { bus } from "./bus.js";
import { describe, NotFound, WeftError } from "./errors.js";
import { stopping } from "./lifecycle.js";
import { abandon, complete, completeBatch, receive } from "./queue.js";
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
    const done = [];
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
        done.push(message);
      } else {
        console.error(
          `weft: queue \`${queue}\`: message ${message.id} failed on delivery ${message.dequeueCount}, abandoning it: ${describe(failure)}`,
        );
        await settle(queue, message, () => abandon(queue, message, retryDelayMs));
      }
    }
    await completeAll(queue, done);
  }
}

/**
 * Completes the messages a batch handled in one call, retrying the call
 * while it fails transiently; a message the call could not complete for a
 * passing reason is then settled on its own, and one whose lease lapsed is
 * logged and left (see `settle`).
 */
async function completeAll(queue, done) {
  if (done.length === 0) return;
  const backoff = new Backoff();
  let outcomes;
  for (;;) {
    try {
      outcomes = completeBatch(queue, done);
      break;
    } catch (error) {
      if (!isTransient(error)) throw error;
      await bus.sleep(backoff.next());
    }
  }
  for (const [i, message] of done.entries()) {
    const completeIt = () => complete(queue, message);
    // A host answering fewer outcomes than receipts: the rest are settled
    // one by one.
    if (i >= outcomes.length) {
      await settle(queue, message, completeIt);
      continue;
    }
    // Each answered outcome is `undefined` (done) or a `WeftError`.
    const outcome = outcomes[i];
    if (outcome === undefined) continue;
    if (outcome instanceof NotFound) {
      lapsed(queue, message, outcome);
    } else if (isTransient(outcome)) {
      await settle(queue, message, completeIt);
    } else {
      throw outcome;
    }
  }
}

/** Logs a settle refused because the message's lease lapsed first. */
function lapsed(queue, message, error) {
  console.error(
    `weft: queue \`${queue}\`: could not settle message ${message.id} (${error.reason}); its lease lapsed and it will be delivered again`,
  );
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
        lapsed(queue, message, error);
        return;
      } else {
        throw error;
      }
    }
  }
}
