/**
 * Unit tests of the WIT rewrite (wit-rewrite.mjs) that lets componentize-js's
 * engine build against Weft's `wit/`, and of reading the engine's WASI
 * version. Run with `node --test sdk/js/test/`.
 */

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { copyWit, engineWasiVersion, rewriteWit } from "../wit-rewrite.mjs";

const SDK = join(dirname(fileURLToPath(import.meta.url)), "..");

test("wasi 0.2 references move to the target, up or down, however spaced", () => {
  const wit = [
    "package wasi:http@0.2.12;",
    "use wasi:io/streams@0.2.12.{input-stream};",
    "import wasi:clocks/monotonic-clock@0.2.3;",
    "export wasi : http / incoming-handler @ 0.2.12;",
    "import wasi:cli/stdout@0.2.100;",
  ].join("\n");
  assert.equal(
    rewriteWit(wit, "0.2.10"),
    [
      "package wasi:http@0.2.10;",
      "use wasi:io/streams@0.2.10.{input-stream};",
      "import wasi:clocks/monotonic-clock@0.2.10;",
      "export wasi : http / incoming-handler @ 0.2.10;",
      "import wasi:cli/stdout@0.2.10;",
    ].join("\n"),
  );
});

test("everything that is not a wasi 0.2.x release is left alone", () => {
  const wit = [
    "package weft:vmbus@0.1.0;",
    "import weft:vmbus/queue@0.2.12;",
    "import wasi:keyvalue/store@0.2.0-draft;",
    "import wasi:config/store@0.2.0-rc.1;",
    "import wasi:http/types@0.3.0;",
    "import wasi:io/poll@0.2.12+build;",
    "// notwasi:io/poll@0.2.12",
  ].join("\n");
  assert.equal(rewriteWit(wit, "0.2.10"), wit);
});

test("@since versions above the target are lowered, others kept", () => {
  const wit = [
    "@since(version = 0.2.0)",
    "@since(version = 0.2.12)",
    "@since(version=0.2.11)",
    "@since( version = 0.2.12 , feature = foo)",
    "@since(version = 0.2.10)",
    "@since(version = 0.2.0-rc-2023)",
  ].join("\n");
  assert.equal(
    rewriteWit(wit, "0.2.10"),
    [
      "@since(version = 0.2.0)",
      "@since(version = 0.2.10)",
      "@since(version=0.2.10)",
      "@since( version = 0.2.10 , feature = foo)",
      "@since(version = 0.2.10)",
      "@since(version = 0.2.0-rc-2023)",
    ].join("\n"),
  );
});

test("only a 0.2.x target is accepted", () => {
  assert.throws(() => rewriteWit("", "0.3.0"), /0\.2\.x/);
  assert.throws(() => rewriteWit("", "0.2"), /0\.2\.x/);
});

test("the engine's version is read from the interface it exports", () => {
  const bytes = (text) => new TextEncoder().encode(text);
  assert.equal(engineWasiVersion(bytes("\0wasi:http/incoming-handler@0.2.10#handle\0wasi:http/incoming-handler@0.2.10\x05")), "0.2.10");
  assert.throws(() => engineWasiVersion(bytes("nothing here")), /found: none/);
  assert.throws(
    () => engineWasiVersion(bytes("wasi:http/incoming-handler@0.2.3 wasi:http/incoming-handler@0.2.4")),
    /found: 0\.2\.3, 0\.2\.4/,
  );
  assert.throws(() => engineWasiVersion(bytes("wasi:http/incoming-handler@0.3.0")), /only target WASI 0\.2\.x/);
});

test("the installed engine implements a WASI 0.2 release", async () => {
  const engine = join(SDK, "node_modules", "@bytecodealliance", "componentize-js", "lib", "starlingmonkey_embedding.wasm");
  assert.match(engineWasiVersion(await readFile(engine)), /^0\.2\.\d+$/);
});

test("copyWit rewrites every .wit file of Weft's wit/, deps included", async (t) => {
  const dest = await mkdtemp(join(tmpdir(), "weft-wit-test-"));
  t.after(() => rm(dest, { recursive: true, force: true }));
  await copyWit(join(SDK, "..", "..", "wit"), join(dest, "wit"), "0.2.7");
  const sample = await readFile(join(dest, "wit", "deps", "http", "http.wit"), "utf8");
  assert.match(sample, /package wasi:http@0\.2\.7;/);
  assert.match(sample, /wasi:[a-z-]+@0\.2\.7;/);
  assert.doesNotMatch(sample, /@0\.2\.12\b/);
  const vmbus = await readFile(join(dest, "wit", "vmbus.wit"), "utf8");
  assert.match(vmbus, /package weft:vmbus@0\.1\.0;/);
  assert.match(vmbus, /wasi:keyvalue\/store@0\.2\.0-draft/);
});
