/**
 * What the host has measured of this role's use of the machine, read-only,
 * through `weft:vmbus/usage`: for roles that degrade gracefully, shedding
 * optional work when their CPU share is squeezed, their calls are being
 * rate limited, or their deadline is near.
 *
 *     const { deadlineLeftMs } = usage.get();
 *     if (deadlineLeftMs !== undefined && deadlineLeftMs < 50) {
 *       // answer with what we have instead of computing more
 *     }
 *
 * "Role" figures cover every instance of the role on this host since it
 * started; "instance" figures cover the calling sandbox. The WIT's 64-bit
 * counters become numbers (exact up to 2^53).
 */

import { bus } from "./bus.js";
import { call } from "./errors.js";

/** @param {bigint | number | undefined | null} n */
function num(n) {
  return n == null ? undefined : Number(n);
}

/**
 * @typedef {object} Usage
 * @property {number} fuelUsed fuel (about one unit per wasm instruction) the role has burnt
 * @property {number} fuelLeft fuel left in this instance's budget for the current request or batch
 * @property {number} cpuShare the role's share of the fuel burnt on the host over the last second, 0 to 1
 * @property {number} weight the role's CPU weight
 * @property {number} parkedMs how long the role's guests waited for a CPU while other roles ran
 * @property {number} throttledMs how long the role's guests were held back by its CPU quota
 * @property {number} calls VMBus calls the role made that were admitted
 * @property {number} callsRateLimited VMBus calls the role made that were refused as rate limited
 * @property {number} memoryBytes this instance's linear memory
 * @property {number} memoryCapBytes this instance's memory cap
 * @property {number} roleMemoryBytes the linear memory of all the role's instances together
 * @property {number | undefined} roleMemoryCapBytes the cap on all of them, if there is one
 * @property {number | undefined} deadlineLeftMs time left before this request's or batch's deadline, if one runs
 */

/**
 * The figures now. Throws `RateLimited` when the role's `usage` rate limit is spent.
 *
 * @returns {Usage}
 */
export function get() {
  const raw = call(() => bus.usage.get());
  return {
    fuelUsed: num(raw.fuelUsed),
    fuelLeft: num(raw.fuelLeft),
    cpuShare: Number(raw.cpuSharePpm) / 1e6,
    weight: Number(raw.weight),
    parkedMs: num(raw.parkedMs),
    throttledMs: num(raw.throttledMs),
    calls: num(raw.calls),
    callsRateLimited: num(raw.callsRateLimited),
    memoryBytes: num(raw.memoryBytes),
    memoryCapBytes: num(raw.memoryCapBytes),
    roleMemoryBytes: num(raw.roleMemoryBytes),
    roleMemoryCapBytes: num(raw.roleMemoryCapBytes),
    deadlineLeftMs: num(raw.deadlineLeftMs),
  };
}
