/**
 * Rewrites Weft's WIT to the WASI 0.2 patch version the JavaScript engine
 * implements, for build.mjs. Importable on its own (the tests do): it has
 * no side effects and no dependencies.
 *
 * Why: StarlingMonkey, the engine inside componentize-js, binds exports by
 * their exact interface name, so a world exporting
 * `wasi:http/incoming-handler@0.2.12` fails to build against an engine that
 * implements 0.2.10 ("failed to find export of interface ...@0.2.12").
 * WASI 0.2 patch releases are interchangeable at link time (wasmtime's
 * linker matches `0.2.x` imports semver-compatibly), so a component built
 * against the engine's 0.2.N runs on Weft's host unchanged. Weft's own
 * `wit/` stays as it is; the build rewrites a temporary copy.
 */

import { cp, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** The interface whose version the engine is read by: every web role exports it. */
const PROBE = /wasi:http\/incoming-handler@(\d+\.\d+\.\d+)(?![0-9A-Za-z+-]|\.[0-9A-Za-z])/g;

/**
 * The WASI version `engine` (the bytes of componentize-js's
 * `starlingmonkey_embedding.wasm`) implements, such as `"0.2.10"`, read from
 * the name of the `wasi:http/incoming-handler` interface it embeds.
 *
 * @param {Uint8Array} engine
 * @returns {string}
 * @throws {Error} if the engine names no such interface, or several versions of it
 */
export function engineWasiVersion(engine) {
  const text = Buffer.from(engine.buffer, engine.byteOffset, engine.byteLength).toString("latin1");
  const versions = new Set(Array.from(text.matchAll(PROBE), (match) => match[1]));
  if (versions.size !== 1) {
    const found = versions.size === 0 ? "none" : [...versions].join(", ");
    throw new Error(`cannot tell which WASI version the engine implements (wasi:http/incoming-handler versions found: ${found})`);
  }
  const [version] = versions;
  if (!/^0\.2\.\d+$/.test(version)) {
    throw new Error(`the engine implements WASI ${version}; this build can only target WASI 0.2.x`);
  }
  return version;
}

// A `wasi:` package or interface reference at a 0.2.N version, however
// spaced (`wasi:io/streams@0.2.12`, `package wasi:io@0.2.12;`,
// `use wasi:io/poll@0.2.12.{pollable}`). A pre-release or build suffix
// (`wasi:keyvalue@0.2.0-draft`) is a different package and is left alone.
const WASI_REF = /(\bwasi\s*:\s*[a-z][a-z0-9-]*(?:\s*\/\s*[a-z][a-z0-9-]*)?\s*@\s*0\.2\.)(\d+)(?![0-9A-Za-z+-]|\.[0-9A-Za-z])/g;
// A feature gate's version: `@since(version = 0.2.12)`, however spaced,
// perhaps with more arguments after it.
const SINCE = /(@since\s*\(\s*version\s*=\s*0\.2\.)(\d+)(?![0-9A-Za-z+-]|\.[0-9A-Za-z])/g;

/**
 * `text` (one WIT file) with every `wasi:` 0.2.x package reference set to
 * `version`, higher or lower, and every `@since(version = 0.2.x)` above
 * `version` lowered to it (an item gated on a later version would be left
 * out). Everything else, Weft's own packages included, is untouched.
 *
 * @param {string} text
 * @param {string} version the target, `0.2.N`
 * @returns {string}
 */
export function rewriteWit(text, version) {
  const match = /^0\.2\.(\d+)$/.exec(version);
  if (!match) throw new Error(`can only rewrite WIT to a WASI 0.2.x version, not ${version}`);
  const patch = Number(match[1]);
  return text
    .replace(WASI_REF, (_all, head) => `${head}${patch}`)
    .replace(SINCE, (all, head, n) => (Number(n) > patch ? `${head}${patch}` : all));
}

/**
 * Copies the WIT folder `from` to `to`, rewriting every `.wit` file in it
 * (subfolders included) with `rewriteWit(text, version)`.
 *
 * @param {string} from
 * @param {string} to
 * @param {string} version
 */
export async function copyWit(from, to, version) {
  await cp(from, to, { recursive: true });
  const walk = async (dir) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        await walk(path);
      } else if (entry.name.endsWith(".wit")) {
        await writeFile(path, rewriteWit(await readFile(path, "utf8"), version));
      }
    }
  };
  await walk(to);
}
