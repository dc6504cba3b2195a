/**
 * Weft's queues: at-least-once delivery with leases.
 *
 * `send` puts a message on a queue (optionally delayed, with a time to
 * live, or with a dedupe id that makes retrying the send safe). `receive`
 * takes up to a batch of visible messages and hides each from other
 * receivers for its *visibility timeout* (its lease). Settle each delivery
 * before the lease lapses: `complete` deletes the message (`completeBatch`
 * deletes a whole batch's in one host call, which the role's queue rate
 * limit counts once), `abandon` makes it visible again (after an optional
 * delay), and `extend` keeps it for longer. A message whose lease lapses
 * unsettled comes back too, with its `dequeueCount` one higher; after the
 * host's maximum number of deliveries it moves to the queue
 * `<queue>-poison`, where `poisonReason` says why. `length` and `peek` look
 * at a queue without receiving from it.
 *
 * A message may be delivered more than once, so handle it idempotently.
 * Most worker roles use `worker()` (worker.js), which runs the
 * receive/settle loop, rather than these functions.
 *
 * A role may only use the queues its manifest lists; any other name throws
 * `Denied`. Durations are whole milliseconds, saturating at 2^32 - 1 (about
 * 49 days); the host refuses values outside its bounds with `Invalid`.
 */

import { bus } from "./bus.js";
import { call, fromVariant } from "./errors.js";
import { decodeLenient, decodeStrict, millisU32, toBytes } from "./wire.js";

/** The largest message body the host accepts, in bytes (64 KiB). */
export const MAX_BODY_BYTES = 65_536;

/** The largest batch one `receive` or `peek` may return. */
export const MAX_BATCH = 32;

/** `n` clamped to 1..MAX_BATCH, as the Rust SDK does. */
function batchSize(n) {
  return Math.min(Math.max(Math.floor(Number(n)) || 1, 1), MAX_BATCH);
}

/** A message seen by `peek`, which leases nothing (and so cannot be settled). */
export class Peeked {
  /** @param {{id: string, body: Uint8Array, dequeueCount: number, insertedAtMs: bigint | number, poisonReason?: string}} wire */
  constructor(wire) {
    /** The message's id, stable across deliveries (the one `send` returned). */
    this.id = wire.id;
    /** The bytes that were sent. @type {Uint8Array} */
    this.body = wire.body;
    /** How many times the message has been delivered (for a received message, this delivery included; for a peeked one, 0 where the backend does not know). */
    this.dequeueCount = wire.dequeueCount;
    /** When the message was sent, in milliseconds since the Unix epoch. */
    this.insertedAtMs = Number(wire.insertedAtMs);
    /** Why the host moved the message to this poison queue (`undefined` on an ordinary queue). */
    this.poisonReason = wire.poisonReason ?? undefined;
  }

  /**
   * The body as UTF-8 text, decoded leniently: bytes that are not UTF-8
   * become U+FFFD rather than throwing, so a malformed body is handled
   * once instead of failing on every delivery until it is poisoned (as the
   * Rust SDK's worker template does). Use `json()`, or decode `body`
   * yourself, to refuse malformed text.
   *
   * @returns {string}
   */
  text() {
    return decodeLenient(this.body);
  }

  /**
   * The body parsed as JSON, decoded strictly.
   *
   * @returns {any}
   * @throws {TypeError} if the body is not UTF-8; {@link SyntaxError} if it is not JSON
   */
  json() {
    return JSON.parse(decodeStrict(this.body));
  }

  /** When the message was sent. @returns {Date} */
  insertedAt() {
    return new Date(this.insertedAtMs);
  }
}

/** One delivery of a message, as `receive` returns it. */
export class Message extends Peeked {
  /** @param {{id: string, body: Uint8Array, dequeueCount: number, insertedAtMs: bigint | number, receipt: string, poisonReason?: string}} wire */
  constructor(wire) {
    super(wire);
    /** Proof of this delivery, for `complete`, `abandon` and `extend`; valid until this delivery's lease lapses. */
    this.receipt = wire.receipt;
  }
}

/** @param {Message | string} message */
function receiptOf(message) {
  return typeof message === "string" ? message : message.receipt;
}

/**
 * Sends `body` to `queue` and returns the message's id (for a send deduped
 * by its id, the first send's id). When it returns the message is stored.
 *
 * @param {string} queue a queue the manifest lists
 * @param {Uint8Array | string} body at most `MAX_BODY_BYTES` (a string is sent as UTF-8)
 * @param {object} [options]
 * @param {number} [options.delayMs=0] how long the message stays invisible (at most 7 days)
 * @param {number} [options.ttlMs] how long it may wait to be received before the host drops it (default: never)
 * @param {string} [options.dedupeId] an id of your choosing (1 to 128 bytes), the same on every retry of one send
 * @returns {string} the message's id
 * @throws {TooLarge} for a body over 64 KiB; {@link Denied} for a queue the manifest does not list
 */
export function send(queue, body, { delayMs = 0, ttlMs, dedupeId } = {}) {
  const options = {
    initialInvisibilityMs: millisU32(delayMs, "delayMs"),
    // Zero means "never expires" on the wire; a time to live that rounds
    // to zero means "at once", so it becomes 1 ms.
    timeToLiveMs: ttlMs == null ? 0 : Math.max(millisU32(ttlMs, "ttlMs"), 1),
    dedupeId: dedupeId ?? undefined,
  };
  return call(() => bus.queue.send(queue, toBytes(body, "a message body"), options));
}

/**
 * Receives up to `maxMessages` visible messages from `queue`, each leased
 * to this caller for `visibilityTimeoutMs`; waits up to `waitMs` when none
 * is visible. The batch may be empty.
 *
 * @param {string} queue
 * @param {object} [options]
 * @param {number} [options.maxMessages=8] clamped to 1..32
 * @param {number} [options.visibilityTimeoutMs=30000] the lease of each message
 * @param {number} [options.waitMs=20000] how long to wait for a message (the host caps it)
 * @returns {Message[]}
 */
export function receive(queue, { maxMessages = 8, visibilityTimeoutMs = 30_000, waitMs = 20_000 } = {}) {
  const batch = call(() =>
    bus.queue.receive(
      queue,
      batchSize(maxMessages),
      millisU32(visibilityTimeoutMs, "visibilityTimeoutMs"),
      millisU32(waitMs, "waitMs"),
    ),
  );
  return batch.map((wire) => new Message(wire));
}

/**
 * Deletes the message a delivery brought. Throws `NotFound` if its lease
 * lapsed (the message will be, or has been, delivered again).
 *
 * @param {string} queue
 * @param {Message | string} message the delivery (or its receipt)
 */
export function complete(queue, message) {
  call(() => bus.queue.complete(queue, receiptOf(message)));
}

/**
 * Deletes the messages a batch of deliveries brought (1 to `MAX_BATCH`, as
 * one `receive` hands out) in one host call, which the role's queue rate
 * limit counts once. Returns each message's outcome, in order: `undefined`
 * when it was deleted, else the error `complete` would have thrown for it
 * alone (`NotFound` for a lapsed lease). Throws when the call as a whole
 * cannot be made (`RateLimited`, `Denied`, `Invalid` for no messages or
 * more than 32).
 *
 * @param {string} queue
 * @param {Array<Message | string>} messages the deliveries (or their receipts)
 * @returns {Array<import("./errors.js").WeftError | undefined>}
 */
export function completeBatch(queue, messages) {
  const outcomes = call(() => bus.queue.completeBatch(queue, messages.map(receiptOf)));
  // A result nested in the answer is a value, `{tag: "ok"}` or
  // `{tag: "err", val: variant}`, not an exception.
  return outcomes.map((outcome) => (outcome.tag === "err" ? fromVariant(outcome.val) : undefined));
}

/**
 * Gives a delivered message back to `queue`, visible again after `delayMs`
 * (0: at once; at most 7 days).
 *
 * @param {string} queue
 * @param {Message | string} message the delivery (or its receipt)
 * @param {number} [delayMs=0]
 */
export function abandon(queue, message, delayMs = 0) {
  call(() => bus.queue.abandon(queue, receiptOf(message), millisU32(delayMs, "delayMs")));
}

/**
 * Keeps a delivered message hidden for another `ms` from now, for a handler
 * that needs longer than its lease. The receipt stays valid.
 *
 * @param {string} queue
 * @param {Message | string} message the delivery (or its receipt)
 * @param {number} ms
 */
export function extend(queue, message, ms) {
  call(() => bus.queue.extend(queue, receiptOf(message), millisU32(ms, "ms")));
}

/**
 * How many messages `queue` holds: visible, delayed or leased.
 *
 * @param {string} queue
 * @returns {number}
 */
export function length(queue) {
  return Number(call(() => bus.queue.length(queue)));
}

/**
 * Up to `maxMessages` (clamped to 1..32) of the next visible messages of
 * `queue`, in the order they would be received, without receiving them.
 *
 * @param {string} queue
 * @param {number} [maxMessages=1]
 * @returns {Peeked[]}
 */
export function peek(queue, maxMessages = 1) {
  return call(() => bus.queue.peek(queue, batchSize(maxMessages))).map((wire) => new Peeked(wire));
}
