/**
 * Key-value buckets, through the standard `wasi:keyvalue/store` interface.
 *
 * `Bucket.open(name)` opens one of the buckets the role's manifest lists;
 * any other name throws `AccessDenied` or `NoSuchBucket`. An instance
 * keeps one handle per bucket name (the host allows 64 open at once), so
 * open a bucket wherever it is needed, even once per message. Values are
 * bytes (strings are stored as UTF-8); keys are strings. A bucket reads its
 * own writes.
 *
 * A bucket holds at most 64 MiB (keys and values). A write to a full bucket
 * throws `BucketFull`: retrying soon does not help until entries are
 * deleted, expire (the manifest's `[buckets.NAME] ttl-seconds`), or an
 * operator purges them. Other failures (a backend outage, a rate limit)
 * throw `KvError`, whose `transient` is true.
 */

import { bus } from "./bus.js";
import { call } from "./errors.js";
import { decodeLenient, toBytes } from "./wire.js";

// The key componentize-js's resource handles are disposed by (StarlingMonkey
// may predate `Symbol.dispose`; the generated bindings fall back the same way).
const dispose = Symbol.dispose ?? Symbol.for("dispose");

/**
 * The buckets this instance holds open, by name. The host lets an instance
 * hold at most 64 open at once and a handle is released only when it is
 * disposed (the engine's garbage collector may never get to it), so a
 * worker that opened a bucket per message would fail after 64 messages;
 * `Bucket.open` hands out one handle per name for the instance's life.
 *
 * @type {Map<string, Bucket>}
 */
const openBuckets = new Map();

/** An open key-value bucket. */
export class Bucket {
  /** @private Use `Bucket.open`. */
  constructor(name, inner) {
    /** The name this bucket was opened with. */
    this.name = name;
    this.#inner = inner;
  }

  /** The host's handle; `undefined` once closed. */
  #inner;

  /**
   * Opens the bucket `name`, which the role's manifest must list.
   *
   * The first call for a name opens it; later calls return the same
   * `Bucket` until it is closed, so opening a bucket on every message or
   * request costs nothing and holds one of the host's 64 handles.
   *
   * @param {string} name
   * @returns {Bucket}
   * @throws {AccessDenied | NoSuchBucket | KvError}
   */
  static open(name) {
    let bucket = openBuckets.get(name);
    if (bucket === undefined) {
      bucket = new Bucket(name, call(() => bus.keyvalue.open(name)));
      openBuckets.set(name, bucket);
    }
    return bucket;
  }

  /**
   * Releases the host's handle, for a role that opens many buckets in
   * turn. Every `Bucket` that `open(name)` returned is closed with it (they
   * are one object); the next `open(name)` opens it afresh. Closing twice
   * does nothing. `using bucket = Bucket.open(...)` closes it at the end of
   * the block, where the engine supports `using`.
   */
  close() {
    const inner = this.#inner;
    if (inner === undefined) return;
    this.#inner = undefined;
    if (openBuckets.get(this.name) === this) openBuckets.delete(this.name);
    inner[dispose]?.();
  }

  /** Same as `close()`. */
  [dispose]() {
    this.close();
  }

  /** The host's handle, or a `TypeError` if the bucket was closed. */
  #handle() {
    if (this.#inner === undefined) {
      throw new TypeError(`the bucket \`${this.name}\` is closed; open it again`);
    }
    return this.#inner;
  }

  /**
   * The value stored under `key`, or `undefined`.
   *
   * @param {string} key
   * @returns {Uint8Array | undefined}
   */
  get(key) {
    return call(() => this.#handle().get(key)) ?? undefined;
  }

  /**
   * The value stored under `key` as UTF-8 text, or `undefined`. Decoded
   * leniently, as `Message.text()` is: bytes that are not UTF-8 become
   * U+FFFD rather than throwing.
   *
   * @param {string} key
   * @returns {string | undefined}
   */
  getText(key) {
    const value = this.get(key);
    return value === undefined ? undefined : decodeLenient(value);
  }

  /**
   * Stores `value` under `key`, replacing any value there.
   *
   * @param {string} key
   * @param {Uint8Array | string} value a string is stored as UTF-8
   * @throws {BucketFull} when the bucket is full
   */
  set(key, value) {
    const bytes = toBytes(value, "a key-value value");
    call(() => this.#handle().set(key, bytes));
  }

  /**
   * Deletes `key`; deleting a missing key is not an error.
   *
   * @param {string} key
   */
  delete(key) {
    call(() => this.#handle().delete(key));
  }

  /**
   * Whether a value is stored under `key`.
   *
   * @param {string} key
   * @returns {boolean}
   */
  exists(key) {
    return call(() => this.#handle().exists(key));
  }

  /**
   * Every key in the bucket, in no particular order, following the host's
   * pages to the end (a page that repeats the cursor it was asked for ends
   * the walk, rather than looping forever). May be slow on a large bucket.
   *
   * @returns {Generator<string>}
   */
  *keys() {
    let cursor;
    for (;;) {
      const page = call(() => this.#handle().listKeys(cursor));
      yield* page.keys;
      const next = page.cursor ?? undefined;
      if (next === undefined || next === cursor) return;
      cursor = next;
    }
  }
}

/**
 * Opens the bucket `name` (the same as `Bucket.open`: one handle per name).
 *
 * @param {string} name
 * @returns {Bucket}
 */
export function open(name) {
  return Bucket.open(name);
}
