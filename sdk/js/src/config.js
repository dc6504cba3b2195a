/**
 * The role's settings, through the standard `wasi:config/store` interface.
 *
 * Settings are the strings under `[roles.<name>.settings]` in the service's
 * `weft.toml`; a role sees only its own. Failures throw `ConfigError`.
 */

import { bus } from "./bus.js";
import { call } from "./errors.js";

/**
 * The setting `key`, or `undefined` if it is not set.
 *
 * @param {string} key
 * @returns {string | undefined}
 */
export function get(key) {
  return call(() => bus.config.get(key)) ?? undefined;
}

/**
 * Every setting, by key.
 *
 * @returns {Map<string, string>}
 */
export function getAll() {
  return new Map(call(() => bus.config.getAll()));
}
