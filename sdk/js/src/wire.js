/**
 * Conversions between JavaScript values and what the VMBus's WIT types
 * carry, shared by the queue, key-value and worker modules. Internal: not
 * re-exported by `index.js`.
 */

const U32_MAX = 0xffff_ffff;
const encoder = new TextEncoder();
// Lenient: a malformed sequence becomes U+FFFD instead of throwing.
const lenient = new TextDecoder("utf-8");
const strict = new TextDecoder("utf-8", { fatal: true });

/**
 * `ms` as a WIT u32: whole milliseconds, saturating at 2^32 - 1.
 *
 * @param {number} ms
 * @param {string} what the option's name, for the error
 * @returns {number}
 * @throws {RangeError} for a negative number, NaN or a non-number
 */
export function millisU32(ms, what = "duration") {
  if (typeof ms !== "number" || Number.isNaN(ms) || ms < 0) {
    throw new RangeError(`${what} must be a number of milliseconds >= 0, not ${ms}`);
  }
  return Math.min(Math.floor(ms), U32_MAX);
}

/**
 * `value` as bytes: a string as UTF-8, a `Uint8Array` as it is.
 *
 * @param {Uint8Array | string} value
 * @param {string} what what the value is, for the error ("a message body")
 * @returns {Uint8Array}
 * @throws {TypeError} for anything else
 */
export function toBytes(value, what) {
  if (typeof value === "string") return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  throw new TypeError(`${what} is a Uint8Array or a string, not ${typeof value}`);
}

/**
 * `bytes` as text, leniently: bytes that are not UTF-8 become U+FFFD. A
 * worker that threw on a malformed body would have the message delivered
 * again and again until it is poisoned, for a failure no retry can mend.
 *
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function decodeLenient(bytes) {
  return lenient.decode(bytes);
}

/**
 * `bytes` as text, strictly.
 *
 * @param {Uint8Array} bytes
 * @returns {string}
 * @throws {TypeError} if `bytes` are not UTF-8
 */
export function decodeStrict(bytes) {
  return strict.decode(bytes);
}
