/**
 * What every unit test file shares: a module loader for the component-only
 * imports, and the shape of a failed WIT call. Import it before the SDK.
 */

import { register } from "node:module";

// The SDK imports `weft:` and `wasi:` modules, which exist only inside a
// component: resolve them to empty modules; each test puts fakes on `bus`.
register(
  "data:text/javascript," +
    encodeURIComponent(`export async function resolve(specifier, context, next) {
      if (/^(weft|wasi):/.test(specifier)) return { url: "data:text/javascript,export {}", shortCircuit: true };
      return next(specifier, context);
    }`),
);

/**
 * What a WIT import throws for an error variant (componentize-js's shape:
 * an error whose `payload` is the variant).
 *
 * @param {string} tag
 * @param {string} [val]
 */
export function witError(tag, val) {
  return Object.assign(new Error(tag), { payload: val === undefined ? { tag } : { tag, val } });
}
