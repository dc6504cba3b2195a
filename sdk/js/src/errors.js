/**
 * Why a VMBus call failed, as exceptions.
 *
 * Every SDK function throws one of these classes, never the raw value a
 * WIT import throws: `WeftError` is the base of them all, and its
 * `transient` getter says whether the same call may succeed later (a rate
 * limit, a backend outage). The host's reasons never carry host paths or
 * internals; they are safe to show to a client.
 *
 * - Weft's own interfaces (the queue, usage) fail with one class per
 *   variant of `weft:vmbus/types.error`: `RateLimited`, `TooLarge`,
 *   `Denied`, `NotFound`, `Unavailable`, `Invalid`.
 * - Key-value (`wasi:keyvalue/store`) fails with `KvError` or one of its
 *   subclasses `NoSuchBucket`, `AccessDenied` and `BucketFull`.
 * - Settings (`wasi:config/store`) fail with `ConfigError`.
 */

/** The base of every error the SDK throws for a failed VMBus call. */
export class WeftError extends Error {
  /**
   * @param {string} message what failed, for people
   * @param {string} [reason] the host's reason, as it sent it ("" if none)
   */
  constructor(message, reason = "") {
    super(message);
    this.name = new.target.name;
    /** The host's reason, as it sent it ("" if none). */
    this.reason = reason;
  }

  /** Whether the same call may succeed if retried later. */
  get transient() {
    return false;
  }
}

/** The role used up its rate limit for this interface; retry later. Transient. */
export class RateLimited extends WeftError {
  constructor() {
    super("rate limited; retry later");
  }
  get transient() {
    return true;
  }
}

/** An argument exceeded a limit (a body over 64 KiB, a batch over 32...). */
export class TooLarge extends WeftError {
  /** @param {string} [reason] */
  constructor(reason = "") {
    super(`too large: ${reason}`, reason);
  }
}

/** The role's manifest does not grant this (a queue it does not list...). */
export class Denied extends WeftError {
  /** @param {string} [reason] */
  constructor(reason = "") {
    super(`denied: ${reason}`, reason);
  }
}

/** No such thing: an unknown or stale receipt (a lapsed lease), an empty name... */
export class NotFound extends WeftError {
  /** @param {string} [reason] */
  constructor(reason = "") {
    super(`not found: ${reason}`, reason);
  }
}

/** The backend cannot serve the call now; the same call may succeed later. Transient. */
export class Unavailable extends WeftError {
  /** @param {string} [reason] */
  constructor(reason = "") {
    super(`unavailable: ${reason}`, reason);
  }
  get transient() {
    return true;
  }
}

/** An argument is malformed (a zero batch size, a timeout out of range...). */
export class Invalid extends WeftError {
  /** @param {string} [reason] */
  constructor(reason = "") {
    super(`invalid: ${reason}`, reason);
  }
}

/**
 * A key-value call failed. Thrown as such for a backend failure or a rate
 * limit (the WIT's `other`), which may pass: `transient` is true. Its
 * subclasses are the failures that do not pass by themselves.
 */
export class KvError extends WeftError {
  /**
   * @param {string} [reason] the host's reason
   * @param {string} [message] overrides the message (for subclasses)
   */
  constructor(reason = "", message = `key-value error: ${reason}`) {
    super(message, reason);
  }
  get transient() {
    return true;
  }
}

/** The host knows no bucket by that name. */
export class NoSuchBucket extends KvError {
  constructor() {
    super("", "no such key-value bucket");
  }
  get transient() {
    return false;
  }
}

/** The role may not open that bucket (its manifest does not list it). */
export class AccessDenied extends KvError {
  constructor() {
    super("", "access to the key-value bucket denied");
  }
  get transient() {
    return false;
  }
}

/**
 * The bucket is full (64 MiB): a write that would grow it is refused until
 * entries are deleted or expire. Retrying soon does not help.
 */
export class BucketFull extends KvError {
  /** @param {string} [reason] the host's reason, without the `bucket-full:` prefix */
  constructor(reason = "") {
    super(reason, `key-value bucket full: ${reason}`);
  }
  get transient() {
    return false;
  }
}

/** Reading the role's settings failed (`kind` is `"upstream"` or `"io"`). */
export class ConfigError extends WeftError {
  /**
   * @param {"upstream" | "io"} kind which `wasi:config/store.error` case
   * @param {string} [reason] the host's reason
   */
  constructor(kind, reason = "") {
    const what = kind === "io" ? "configuration I/O error" : "configuration source error";
    super(`${what}: ${reason}`, reason);
    /** `"upstream"` or `"io"`. */
    this.kind = kind;
  }
}

/** How the host's key-value `other` error for a full bucket begins (see sdk/rust/src/kv.rs). */
const BUCKET_FULL = "bucket-full";

/** Each WIT error case (by its tag; the three interfaces' tags are distinct) to its class. */
const BY_TAG = {
  "rate-limited": () => new RateLimited(),
  "too-large": (why) => new TooLarge(why),
  denied: (why) => new Denied(why),
  "not-found": (why) => new NotFound(why),
  unavailable: (why) => new Unavailable(why),
  invalid: (why) => new Invalid(why),
  "no-such-store": () => new NoSuchBucket(),
  "access-denied": () => new AccessDenied(),
  other: (why) =>
    why.startsWith(BUCKET_FULL)
      ? new BucketFull(why.slice(BUCKET_FULL.length).replace(/^:*\s*/, ""))
      : new KvError(why),
  upstream: (why) => new ConfigError("upstream", why),
  io: (why) => new ConfigError("io", why),
};

/**
 * Converts what a WIT import threw into the SDK's error for it.
 *
 * componentize-js throws a failed call's `result` error as an exception
 * whose `payload` is the variant, `{tag, val}`. Anything else (a
 * `TypeError` from a bad argument, a `WeftError` already converted) is
 * returned unchanged, so `throw fromWit(e)` never hides a bug.
 *
 * @param {unknown} thrown what the import threw
 * @returns {unknown} a `WeftError`, or `thrown` itself
 */
export function fromWit(thrown) {
  const payload = thrown?.payload;
  if (thrown instanceof WeftError || typeof payload?.tag !== "string") {
    return thrown;
  }
  return fromVariant(payload);
}

/**
 * The SDK's error for a WIT error variant, `{tag, val}`: what a failed
 * call throws as its `payload`, and what a `result` nested in a call's
 * answer (each receipt's outcome of `complete-batch`) carries as its `err`.
 *
 * @param {{tag: string, val?: unknown}} variant
 * @returns {WeftError}
 */
export function fromVariant(variant) {
  const why = variant.val == null ? "" : String(variant.val);
  const make = Object.hasOwn(BY_TAG, variant.tag) ? BY_TAG[variant.tag] : undefined;
  return make ? make(why) : new WeftError(`${variant.tag}: ${why}`, why);
}

/**
 * Calls `f` and converts what it throws with `fromWit`.
 *
 * @template T
 * @param {() => T} f a call to a WIT import
 * @returns {T}
 */
export function call(f) {
  try {
    return f();
  } catch (thrown) {
    throw fromWit(thrown);
  }
}

/**
 * `thrown` for a log line: its text (`Error: message`) and, where it has
 * one, its stack. Node's stacks begin with the text; SpiderMonkey's (in a
 * component) are the frames alone, so the text is put first.
 *
 * @param {unknown} thrown
 * @returns {string}
 */
export function describe(thrown) {
  let text;
  try {
    text = String(thrown);
  } catch {
    text = Object.prototype.toString.call(thrown);
  }
  const stack = typeof thrown?.stack === "string" ? thrown.stack.trimEnd() : "";
  if (stack === "") return text;
  return stack.startsWith(text) ? stack : `${text}\n${stack}`;
}
