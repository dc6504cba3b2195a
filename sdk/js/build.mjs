#!/usr/bin/env node
/**
 * Builds a JavaScript role into a Wasm component Weft can run.
 *
 *     node build.mjs <web|worker> <entry.js> <out.wasm>
 *
 * 1. Copies Weft's `wit/` to a temporary folder, rewritten to the WASI 0.2
 *    patch version componentize-js's engine implements (read from the
 *    engine itself; wit-rewrite.mjs says why).
 * 2. Bundles the entry with esbuild into one module: `import ... from
 *    "weft"` becomes this SDK (`src/index.js`), relative imports and npm
 *    packages are inlined, and the `wasi:*` and `weft:*` imports stay as
 *    they are, for componentize-js to bind to the world's imports.
 * 3. Runs componentize-js on the bundle with the world
 *    `weft:vmbus/web-role-with-hooks` or `weft:vmbus/worker-role-with-hooks`
 *    (a worker has no `wasi:http`, so its build disables StarlingMonkey's
 *    `http` and `fetch-event` features), and writes the component.
 *
 * componentize-js resolves relative imports itself, but only inside the
 * entry's folder (it maps that folder as the component's `/` while it
 * pre-initializes the engine); the SDK lives elsewhere and `weft` is a bare
 * name, so the build bundles rather than copying files around.
 */

import { constants, existsSync, rmSync } from "node:fs";
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { copyWit, engineWasiVersion } from "./wit-rewrite.mjs";

const SDK_DIR = dirname(fileURLToPath(import.meta.url));
const WIT_DIR = resolve(SDK_DIR, "..", "..", "wit");
const SDK_ENTRY = join(SDK_DIR, "src", "index.js");
const MODULES = join(SDK_DIR, "node_modules");
// The engine componentize-js splices a role into (its default, non-weval build).
const ENGINE = join(MODULES, "@bytecodealliance", "componentize-js", "lib", "starlingmonkey_embedding.wasm");

/** What each kind of role builds: its world, the exports its module must
 * have, and the StarlingMonkey features it cannot use. */
const KINDS = {
  web: {
    world: "weft:vmbus/web-role-with-hooks",
    exports: ["hooks"],
    disableFeatures: [],
    hint: 'end app.js with `export const hooks = lifecycleHooks();` (import it from "weft")',
  },
  worker: {
    world: "weft:vmbus/worker-role-with-hooks",
    exports: ["run", "hooks"],
    // Weft refuses a worker that imports wasi:http: it has no outside contact.
    disableFeatures: ["http", "fetch-event"],
    hint: 'export `run` (e.g. `export const run = worker("tasks", handle);`) and `export const hooks = lifecycleHooks();`',
  },
};

/** A failure the build explains in a message of its own (no stack trace). */
class BuildFailure extends Error {}

function fail(message) {
  throw new BuildFailure(message);
}

/** Loads the build's own packages, or exits with the one line that says how to install them. */
async function loadTools() {
  const modules = MODULES;
  const missing = ["@bytecodealliance/componentize-js", "esbuild"].some(
    (name) => !existsSync(join(modules, name, "package.json")),
  );
  if (missing) {
    fail(`the JavaScript SDK's packages are missing: run npm ci --prefix ${SDK_DIR}`);
  }
  // Import by path: the entry's own folder may have no node_modules at all.
  const importPackage = async (name) => {
    const manifest = JSON.parse(await readFile(join(modules, name, "package.json"), "utf8"));
    const exported = manifest.exports?.["."] ?? manifest.exports;
    const relative =
      (typeof exported === "string" ? exported : exported?.import ?? exported?.default) ??
      manifest.module ??
      manifest.main;
    return import(pathToFileURL(join(modules, name, relative)).href);
  };
  const [componentizeJs, esbuild] = await Promise.all([
    importPackage("@bytecodealliance/componentize-js"),
    importPackage("esbuild"),
  ]);
  return { componentize: componentizeJs.componentize, esbuild: esbuild.default ?? esbuild };
}

/** Bundles `entry` into `outfile`; returns the names the bundle exports. */
async function bundle(esbuild, entry, outfile) {
  const weftSdk = {
    name: "weft-sdk",
    setup(build) {
      build.onResolve({ filter: /^weft$/ }, () => ({ path: SDK_ENTRY }));
    },
  };
  let result;
  try {
    result = await esbuild.build({
      entryPoints: [entry],
      outfile,
      bundle: true,
      format: "esm",
      // StarlingMonkey is a browser-like engine (fetch, Request, TextEncoder...).
      platform: "browser",
      target: "es2022",
      external: ["wasi:*", "weft:*"],
      plugins: [weftSdk],
      metafile: true,
      // Silent so that failures are reported once, below, in our words;
      // warnings are printed after the build.
      logLevel: "silent",
    });
  } catch (error) {
    const messages = error.errors
      ? await esbuild.formatMessages(error.errors, { kind: "error", color: false })
      : [String(error)];
    fail(`bundling ${entry} failed:\n${messages.join("").trimEnd()}`);
  }
  if (result.warnings.length > 0) {
    const messages = await esbuild.formatMessages(result.warnings, { kind: "warning", color: false });
    process.stderr.write(messages.join(""));
  }
  return Object.values(result.metafile.outputs).flatMap((output) => output.exports ?? []);
}

async function main() {
  const [kindName, entryArg, outArg, ...rest] = process.argv.slice(2);
  const kind = Object.hasOwn(KINDS, kindName) ? KINDS[kindName] : undefined;
  if (!kind || !entryArg || !outArg || rest.length > 0) {
    fail("usage: node build.mjs <web|worker> <entry.js> <out.wasm>");
  }
  const entry = resolve(entryArg);
  const out = resolve(outArg);
  if (!existsSync(entry)) {
    fail(`no such file: ${entry}`);
  }
  if (!existsSync(join(WIT_DIR, "vmbus.wit"))) {
    fail(`no Weft WIT at ${WIT_DIR}: build.mjs must stay in <weft>/sdk/js, beside <weft>/wit`);
  }
  await checkWritable(out);
  const { componentize, esbuild } = await loadTools();
  let wasiVersion;
  try {
    wasiVersion = engineWasiVersion(await readFile(ENGINE));
  } catch (error) {
    fail(`componentize-js's engine (${ENGINE}): ${error.message}`);
  }

  const temp = await mkdtemp(join(tmpdir(), "weft-js-build-"));
  // Remove the temporary folder on Ctrl-C or a kill too, not only on return.
  const onSignal = (signal) => {
    rmSync(temp, { recursive: true, force: true });
    process.kill(process.pid, signal);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const wit = join(temp, "wit");
    await copyWit(WIT_DIR, wit, wasiVersion);
    const bundled = join(temp, "app.bundle.js");
    const exported = await bundle(esbuild, entry, bundled);
    const absent = kind.exports.filter((name) => !exported.includes(name));
    if (absent.length > 0) {
      fail(`${entryArg} does not export ${absent.map((n) => `\`${n}\``).join(" or ")}: ${kind.hint}`);
    }

    let component;
    try {
      ({ component } = await componentize({
        sourcePath: bundled,
        witPath: wit,
        worldName: kind.world,
        disableFeatures: kind.disableFeatures,
      }));
    } catch (error) {
      fail(`componentize-js failed:\n${error?.message ?? error}`);
    }
    try {
      await writeFile(out, component);
    } catch (error) {
      fail(`cannot write ${out}: ${error.message}`);
    }
    const mib = (component.length / (1024 * 1024)).toFixed(1);
    console.log(`weft: built ${out} (${component.length} bytes, ${mib} MiB)`);
  } finally {
    await rm(temp, { recursive: true, force: true });
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** Fails now, before a build of many seconds, if `out` cannot be written. */
async function checkWritable(out) {
  try {
    await mkdir(dirname(out), { recursive: true });
    await access(existsSync(out) ? out : dirname(out), constants.W_OK);
  } catch (error) {
    fail(`cannot write ${out}: ${error.message}`);
  }
}

try {
  await main();
} catch (error) {
  if (!(error instanceof BuildFailure)) throw error;
  console.error(`weft: ${error.message}`);
  process.exitCode = 1;
}
