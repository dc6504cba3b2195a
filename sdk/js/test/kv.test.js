/**
 * Unit tests of key-value bucket handles (src/kv.js): one host handle per
 * bucket name for the instance's life, released by `close()`. Run with
 * `node --test sdk/js/test/`.
 */

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { witError } from "./support.js";

const { bus } = await import("../src/bus.js");
const { Bucket, open } = await import("../src/kv.js");
const { AccessDenied } = await import("../src/errors.js");

const dispose = Symbol.dispose ?? Symbol.for("dispose");

/** Host handles as componentize-js makes them, counting opens and drops. */
let host;

beforeEach(() => {
  host = { opened: [], live: 0, stored: new Map() };
  bus.keyvalue = {
    open(name) {
      if (name === "secret") throw witError("access-denied");
      host.opened.push(name);
      // As the host does: at most 64 handles held at once.
      if (host.live >= 64) throw witError("other", "at most 64 buckets may be open at once");
      host.live += 1;
      let dropped = false;
      return {
        set: (key, value) => host.stored.set(`${name}/${key}`, value),
        get: (key) => host.stored.get(`${name}/${key}`),
        [dispose]() {
          assert.ok(!dropped, "a handle dropped twice");
          dropped = true;
          host.live -= 1;
        },
      };
    },
  };
});

test("opening the same bucket 100 times holds one handle", (t) => {
  t.after(() => Bucket.open("results").close());
  for (let i = 0; i < 100; i++) {
    Bucket.open("results").set(`m${i}`, String(i));
  }
  assert.deepEqual(host.opened, ["results"]);
  assert.equal(host.live, 1);
  assert.equal(host.stored.size, 100);
  assert.equal(open("results"), Bucket.open("results"));
});

test("close releases the handle; the next open opens afresh", () => {
  const first = Bucket.open("jobs");
  first.close();
  assert.equal(host.live, 0);
  first.close();
  assert.equal(host.live, 0);
  assert.throws(() => first.get("k"), (e) => e instanceof TypeError && /closed/.test(e.message));

  const second = Bucket.open("jobs");
  assert.notEqual(second, first);
  assert.deepEqual(host.opened, ["jobs", "jobs"]);
  second[dispose]();
  assert.equal(host.live, 0);
});

test("distinct names are distinct handles, and a failed open is not kept", () => {
  const names = Array.from({ length: 64 }, (_, i) => `b${i}`);
  for (const name of names) Bucket.open(name);
  assert.equal(host.live, 64);
  for (const name of names) Bucket.open(name).close();
  assert.equal(host.live, 0);

  assert.throws(() => Bucket.open("secret"), AccessDenied);
  assert.throws(() => Bucket.open("secret"), AccessDenied);
});

test("getText decodes leniently, as Message.text() does", (t) => {
  const bucket = Bucket.open("texts");
  t.after(() => bucket.close());
  bucket.set("bad", new Uint8Array([0x61, 0xff]));
  bucket.set("good", "é");
  assert.equal(bucket.getText("bad"), "a\ufffd");
  assert.equal(bucket.getText("good"), "é");
});
