/**
 * Unit tests of the error mapping (src/errors.js) and of how the queue,
 * key-value, config and lifecycle wrappers use it, against fake VMBus
 * imports. Run with `node --test sdk/js/test/`.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { witError } from "./support.js";

const { bus } = await import("../src/bus.js");
const weft = await import("../src/index.js");
const { respond } = await import("../src/web.js");
const {
  AccessDenied,
  BucketFull,
  ConfigError,
  Denied,
  fromWit,
  Invalid,
  KvError,
  NoSuchBucket,
  NotFound,
  RateLimited,
  TooLarge,
  Unavailable,
  WeftError,
} = weft;

test("every VMBus variant becomes its class, with the host's reason", () => {
  const cases = [
    ["rate-limited", undefined, RateLimited, "rate limited; retry later", true],
    ["too-large", "body", TooLarge, "too large: body", false],
    ["denied", "queue `x` is not granted", Denied, "denied: queue `x` is not granted", false],
    ["not-found", "receipt", NotFound, "not found: receipt", false],
    ["unavailable", "busy", Unavailable, "unavailable: busy", true],
    ["invalid", "zero", Invalid, "invalid: zero", false],
  ];
  for (const [tag, val, type, message, transient] of cases) {
    const error = fromWit(witError(tag, val));
    assert.ok(error instanceof type, tag);
    assert.ok(error instanceof WeftError);
    assert.equal(error.message, message);
    assert.equal(error.reason, val ?? "");
    assert.equal(error.transient, transient, tag);
    assert.equal(error.name, type.name);
  }
});

test("key-value errors, with a full bucket its own class", () => {
  const noSuch = fromWit(witError("no-such-store"));
  assert.ok(noSuch instanceof NoSuchBucket && noSuch instanceof KvError);
  assert.equal(noSuch.message, "no such key-value bucket");
  assert.equal(noSuch.transient, false);
  const denied = fromWit(witError("access-denied"));
  assert.ok(denied instanceof AccessDenied);
  assert.equal(denied.message, "access to the key-value bucket denied");

  const full = fromWit(witError("other", "bucket-full: the bucket holds 67108000 bytes; the limit is 67108864"));
  assert.ok(full instanceof BucketFull);
  assert.equal(full.reason, "the bucket holds 67108000 bytes; the limit is 67108864");
  assert.equal(full.message, "key-value bucket full: the bucket holds 67108000 bytes; the limit is 67108864");
  assert.equal(full.transient, false);
  assert.equal(fromWit(witError("other", "bucket-full")).reason, "");

  // Other reasons, even ones naming a full bucket, stay the generic (transient) error.
  for (const other of ["unavailable: down", "rate-limited; retry later", "not bucket-full"]) {
    const error = fromWit(witError("other", other));
    assert.ok(error instanceof KvError && !(error instanceof BucketFull), other);
    assert.equal(error.reason, other);
    assert.equal(error.message, `key-value error: ${other}`);
    assert.equal(error.transient, true);
  }
});

test("config errors", () => {
  const upstream = fromWit(witError("upstream", "vault"));
  assert.ok(upstream instanceof ConfigError);
  assert.equal(upstream.kind, "upstream");
  assert.equal(upstream.message, "configuration source error: vault");
  assert.equal(fromWit(witError("io", "eof")).message, "configuration I/O error: eof");
});

test("what is not a VMBus error passes through unchanged", () => {
  const bug = new TypeError("not a function");
  assert.equal(fromWit(bug), bug);
  assert.equal(fromWit("a string"), "a string");
  const already = new Denied("x");
  assert.equal(fromWit(already), already);
});

test("queue calls convert errors, arguments and results", () => {
  const calls = [];
  bus.queue = {
    send(queue, body, options) {
      calls.push({ queue, body: new TextDecoder().decode(body), options });
      if (queue === "nope") throw witError("denied", "queue `nope` is not granted");
      return "id-1";
    },
    length: () => 7n,
    peek: (_queue, max) => [{ id: "p", body: new TextEncoder().encode('{"a":1}'), dequeueCount: 0, insertedAtMs: 1500n, poisonReason: undefined, max }],
  };
  assert.equal(weft.queue.send("q", "héllo"), "id-1");
  assert.deepEqual(calls[0], { queue: "q", body: "héllo", options: { initialInvisibilityMs: 0, timeToLiveMs: 0, dedupeId: undefined } });
  weft.queue.send("q", new Uint8Array([104, 105]), { delayMs: 2000.7, ttlMs: 0.01, dedupeId: "order-7" });
  assert.deepEqual(calls[1].options, { initialInvisibilityMs: 2000, timeToLiveMs: 1, dedupeId: "order-7" });
  weft.queue.send("q", "x", { delayMs: 2 ** 40 });
  assert.equal(calls[2].options.initialInvisibilityMs, 0xffffffff);
  assert.throws(() => weft.queue.send("q", "x", { delayMs: -1 }), RangeError);
  assert.throws(() => weft.queue.send("nope", "x"), (e) => e instanceof Denied && e.reason === "queue `nope` is not granted");
  assert.equal(weft.queue.length("q"), 7);
  const [peeked] = weft.queue.peek("q", 0);
  assert.deepEqual(peeked.json(), { a: 1 });
  assert.equal(peeked.insertedAtMs, 1500);
});

test("completeBatch passes the receipts and answers each outcome", () => {
  const calls = [];
  bus.queue = {
    completeBatch(queue, receipts) {
      calls.push({ queue, receipts });
      if (queue === "limited") throw witError("rate-limited");
      if (receipts.length === 0) throw witError("invalid", "no receipts");
      // componentize-js's shape for the nested `result<_, error>`.
      return [
        { tag: "ok", val: undefined },
        { tag: "err", val: { tag: "not-found", val: "stale receipt" } },
        { tag: "err", val: { tag: "unavailable", val: "busy" } },
      ];
    },
  };
  const message = new weft.Message({ id: "a", body: new Uint8Array(), dequeueCount: 1, insertedAtMs: 0n, receipt: "r-a" });
  const [done, lapsed, busy] = weft.queue.completeBatch("q", [message, "r-b", "r-c"]);
  assert.deepEqual(calls, [{ queue: "q", receipts: ["r-a", "r-b", "r-c"] }]);
  assert.equal(done, undefined);
  assert.ok(lapsed instanceof NotFound && lapsed.reason === "stale receipt");
  assert.ok(busy instanceof Unavailable && busy.transient);
  // The call as a whole fails as the other queue calls do.
  assert.throws(() => weft.queue.completeBatch("limited", ["r-a"]), RateLimited);
  assert.throws(() => weft.queue.completeBatch("q", []), (e) => e instanceof Invalid && e.reason === "no receipts");
});

test("message text decodes leniently, JSON strictly", () => {
  const message = new weft.Message({ id: "m", body: new Uint8Array([0x68, 0xff, 0x69]), dequeueCount: 2, insertedAtMs: 5n, receipt: "r" });
  assert.equal(message.text(), "h\ufffdi");
  assert.throws(() => message.json(), TypeError);
  // A JSON string holding the same bad byte is refused too, not replaced.
  const quoted = new weft.Message({ id: "q", body: new Uint8Array([0x22, 0xff, 0x22]), dequeueCount: 1, insertedAtMs: 0n, receipt: "r" });
  assert.throws(() => quoted.json(), TypeError);
  assert.equal(message.receipt, "r");
  assert.equal(message.poisonReason, undefined);
});

test("the public API exports no internals", () => {
  for (const name of ["millisU32", "pull", "BACKOFF_INITIAL_MS", "BACKOFF_MAX_MS", "toBytes"]) {
    assert.equal(weft[name], undefined, name);
    assert.equal(weft.queue[name], undefined, `queue.${name}`);
  }
  assert.throws(() => weft.worker("q", undefined), TypeError);
  assert.throws(() => weft.worker("q", "handle"), TypeError);
});

test("usage figures become numbers, absent ones undefined", () => {
  bus.usage = {
    get: () => ({
      fuelUsed: 2n ** 40n,
      fuelLeft: 5n,
      cpuSharePpm: 250_000,
      weight: 100,
      parkedMs: 1n,
      throttledMs: 2n,
      calls: 3n,
      callsRateLimited: 4n,
      memoryBytes: 65536n,
      memoryCapBytes: 131072n,
      roleMemoryBytes: 65536n,
      roleMemoryCapBytes: undefined,
      deadlineLeftMs: 40n,
    }),
  };
  assert.deepEqual(weft.usage.get(), {
    fuelUsed: 2 ** 40,
    fuelLeft: 5,
    cpuShare: 0.25,
    weight: 100,
    parkedMs: 1,
    throttledMs: 2,
    calls: 3,
    callsRateLimited: 4,
    memoryBytes: 65536,
    memoryCapBytes: 131072,
    roleMemoryBytes: 65536,
    roleMemoryCapBytes: undefined,
    deadlineLeftMs: 40,
  });
  bus.usage.get = () => {
    throw witError("rate-limited");
  };
  assert.throws(() => weft.usage.get(), RateLimited);
});

test("buckets convert errors and walk every page of keys", () => {
  const pages = new Map([
    [undefined, { keys: ["a", "b"], cursor: 7n }],
    [7n, { keys: ["c"], cursor: 9n }],
    [9n, { keys: [], cursor: undefined }],
  ]);
  const inner = {
    get: (key) => (key === "k" ? new TextEncoder().encode("v") : undefined),
    set: () => {
      throw witError("other", "bucket-full: 64 MiB");
    },
    listKeys: (cursor) => pages.get(cursor),
  };
  bus.keyvalue = {
    open(name) {
      if (name === "secret") throw witError("access-denied");
      return inner;
    },
  };
  const bucket = weft.kv.Bucket.open("jobs");
  assert.equal(bucket.getText("k"), "v");
  assert.equal(bucket.get("missing"), undefined);
  assert.deepEqual([...bucket.keys()], ["a", "b", "c"]);
  assert.throws(() => bucket.set("k", "v"), (e) => e instanceof BucketFull && e.reason === "64 MiB");
  assert.throws(() => weft.kv.Bucket.open("secret"), AccessDenied);

  // A page that repeats its cursor ends the walk instead of looping.
  inner.listKeys = () => ({ keys: ["x"], cursor: 1n });
  assert.deepEqual([...bucket.keys()], ["x", "x"]);
  assert.throws(() => bucket.set("k", 7), TypeError);
  bucket.close();
});

test("config reads settings and converts errors", () => {
  bus.config = {
    get: (key) => (key === "greeting" ? "hi" : undefined),
    getAll: () => [["greeting", "hi"]],
  };
  assert.equal(weft.config.get("greeting"), "hi");
  assert.equal(weft.config.get("other"), undefined);
  assert.deepEqual([...weft.config.getAll()], [["greeting", "hi"]]);
  bus.config.get = () => {
    throw witError("io", "eof");
  };
  assert.throws(() => weft.config.get("greeting"), ConfigError);
});

test("a start hook that throws fails with its message as a string", async () => {
  const hooks = weft.lifecycleHooks({
    start() {
      throw new Error("no database");
    },
  });
  await assert.rejects(hooks.start(), (e) => e === "no database");
  await weft.lifecycleHooks().start();
  await weft.lifecycleHooks().stop();
});

test("a stop hook that throws is logged, not rethrown", async (t) => {
  const logged = [];
  t.mock.method(console, "error", (line) => logged.push(line));
  const hooks = weft.lifecycleHooks({
    async stop() {
      throw new Error("flush failed");
    },
  });
  assert.equal(await hooks.stop(), undefined);
  assert.equal(logged.length, 1);
  assert.match(logged[0], /^weft: the stop hook failed: Error: flush failed/);
});

test("a web handler that throws answers 500 with JSON", async () => {
  const response = await respond(() => {
    throw new Error("boom");
  }, new Request("http://x/y"));
  assert.equal(response.status, 500);
  assert.equal(response.headers.get("content-type"), "application/json");
  assert.deepEqual(await response.json(), { error: "internal error" });

  const ok = await respond(async () => weft.json({ a: 1 }, 201, { location: "/a" }), new Request("http://x/"));
  assert.equal(ok.status, 201);
  assert.equal(ok.headers.get("location"), "/a");
  assert.equal(await ok.text(), '{"a":1}');
});

test("describe gives the error's text and its stack, however the engine writes stacks", async () => {
  const { describe } = await import("../src/errors.js");
  const node = new Error("boom");
  assert.equal(describe(node), node.stack.trimEnd());
  // SpiderMonkey's stacks are the frames alone.
  const spidermonkey = Object.assign(new Error("boom"), { stack: "run@app.js:3:9\n" });
  assert.equal(describe(spidermonkey), "Error: boom\nrun@app.js:3:9");
  assert.equal(describe(undefined), "undefined");
  assert.equal(describe(Symbol("s")), "Symbol(s)");
  assert.equal(describe(Object.create(null)), "[object Object]");
});
