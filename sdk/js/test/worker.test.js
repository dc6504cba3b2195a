/**
 * Unit tests of the worker's pull loop (src/pull.js) and `run` export
 * (src/worker.js) against a scripted
 * VMBus, mirroring the Rust SDK's `worker.rs` tests. Run with
 * `node --test sdk/js/test/`.
 */

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { witError } from "./support.js";

const { bus } = await import("../src/bus.js");
const { worker } = await import("../src/worker.js");
const { pull } = await import("../src/pull.js");
const { Denied, Invalid, NotFound } = await import("../src/errors.js");

/** A wire message as `queue.receive` returns it. */
function wire(id, body) {
  return { id, body: new TextEncoder().encode(body), dequeueCount: 1, insertedAtMs: 0n, receipt: `receipt-${id}` };
}

/**
 * A scripted queue: `receive` answers from `batches` (an array of wire
 * messages, or a thrown error), then `denied` (which ends the loop), or an
 * empty batch with `stopping()` true when `stopAtEnd`; settling answers
 * from `settles` (errors to throw, `undefined` for success), then succeeds;
 * a batch completion answers from `batchCalls` (an error to throw, or the
 * outcomes as componentize-js gives them: `{tag: "ok"}` or `{tag: "err",
 * val: variant}`), else each of its receipts from `settles`.
 * Past 100 receives (or sleeps) it throws a plain error, so a loop that
 * should have ended fails its test.
 */
let script;

beforeEach(() => {
  script = {
    batches: [],
    settles: [],
    batchCalls: [],
    // How many receipts each batch completion carried, and how many single completions there were.
    batchSizes: [],
    singleCompletes: 0,
    completed: [],
    abandoned: [],
    delays: [],
    slept: [],
    received: [],
    stopAtEnd: false,
  };
  const settle = () => {
    const outcome = script.settles.shift();
    if (outcome) throw outcome;
  };
  bus.queue = {
    receive(queue, maxMessages, visibilityTimeoutMs, waitMs) {
      script.received.push({ queue, maxMessages, visibilityTimeoutMs, waitMs });
      // A loop that fails to stop fails its test instead of hanging it.
      if (script.received.length > 100) throw new Error("runaway loop");
      if (script.batches.length > 0) {
        const next = script.batches.shift();
        if (next instanceof Error) throw next;
        return next;
      }
      if (script.stopAtEnd) return [];
      throw witError("denied", "script over");
    },
    complete(_queue, receipt) {
      script.singleCompletes += 1;
      settle();
      script.completed.push(receipt.replace("receipt-", ""));
    },
    completeBatch(_queue, receipts) {
      script.batchSizes.push(receipts.length);
      let outcomes;
      if (script.batchCalls.length > 0) {
        outcomes = script.batchCalls.shift();
        if (outcomes instanceof Error) throw outcomes;
      } else {
        outcomes = receipts.map(() => {
          const outcome = script.settles.shift();
          return outcome ? err(outcome) : ok;
        });
      }
      receipts.forEach((receipt, i) => {
        if (outcomes[i]?.tag === "ok") script.completed.push(receipt.replace("receipt-", ""));
      });
      return outcomes;
    },
    abandon(_queue, receipt, delayMs) {
      settle();
      script.abandoned.push(receipt.replace("receipt-", ""));
      script.delays.push(delayMs);
    },
  };
  bus.lifecycle = { stopping: () => script.stopAtEnd && script.batches.length === 0 };
  bus.sleep = async (ms) => {
    script.slept.push(ms);
    if (script.slept.length > 100) throw new Error("runaway backoff");
  };
});

/** A receipt's outcome in a `completeBatch` answer: done. */
const ok = { tag: "ok", val: undefined };

/** A receipt's outcome in a `completeBatch` answer: the error `witError` carries. */
function err(thrown) {
  return { tag: "err", val: thrown.payload };
}

function okUnlessFail(message) {
  if (message.text() === "fail") throw new Error("asked to fail");
}

/** The loop as `worker(queue, handler)` runs it, with its default options and `overrides`. */
function loop(handler, overrides = {}) {
  return pull("q", handler, { maxMessages: 8, visibilityTimeoutMs: 30_000, waitMs: 20_000, retryDelayMs: 0, ...overrides });
}

test("completes successes and abandons failures", async () => {
  script.batches.push([wire("a", "ok"), wire("b", "fail")], [wire("c", "ok")]);
  await assert.rejects(loop(okUnlessFail), (e) => e instanceof Denied && e.reason === "script over");
  assert.deepEqual(script.completed, ["a", "c"]);
  assert.deepEqual(script.abandoned, ["b"]);
  assert.deepEqual(script.delays, [0]);
  assert.deepEqual(script.slept, []);
});

test("async handlers are awaited: a rejection abandons", async () => {
  script.batches.push([wire("a", "ok"), wire("b", "fail")]);
  const order = [];
  const handler = async (message) => {
    await new Promise((resolve) => setTimeout(resolve, 5));
    order.push(message.id);
    if (message.text() === "fail") throw new Error("async failure");
  };
  await assert.rejects(loop(handler), Denied);
  assert.deepEqual(order, ["a", "b"]);
  assert.deepEqual(script.completed, ["a"]);
  assert.deepEqual(script.abandoned, ["b"]);
});

test("failures are abandoned with the retry delay", async () => {
  script.batches.push([wire("a", "fail")]);
  await assert.rejects(loop(okUnlessFail, { retryDelayMs: 1500 }), Denied);
  assert.deepEqual(script.delays, [1500]);
});

test("options reach receive, with the Rust SDK's defaults", async () => {
  script.stopAtEnd = true;
  await worker("jobs", okUnlessFail).run();
  assert.deepEqual(script.received, [{ queue: "jobs", maxMessages: 8, visibilityTimeoutMs: 30000, waitMs: 20000 }]);
  script.received = [];
  await worker("jobs", okUnlessFail, { batchSize: 100, visibilityTimeoutMs: 5000, waitMs: 1000 }).run();
  assert.deepEqual(script.received, [{ queue: "jobs", maxMessages: 32, visibilityTimeoutMs: 5000, waitMs: 1000 }]);
});

test("backs off on transient receive errors and resets after a success", async () => {
  for (let i = 0; i < 7; i++) script.batches.push(witError("rate-limited"));
  script.batches.push([wire("a", "ok")], witError("unavailable", "restarting"));
  await assert.rejects(loop(okUnlessFail), Denied);
  assert.deepEqual(script.slept, [50, 100, 200, 400, 800, 1600, 2000, 50]);
  assert.deepEqual(script.completed, ["a"]);
});

test("errors it cannot retry end run, rethrown", async () => {
  for (const [tag, type] of [
    ["denied", Denied],
    ["not-found", NotFound],
    ["invalid", Invalid],
  ]) {
    script.batches = [witError(tag, "fatal"), [wire("never", "ok")]];
    script.completed = [];
    await assert.rejects(loop(okUnlessFail), (e) => e instanceof type && e.reason === "fatal");
    assert.deepEqual(script.completed, []);
  }
});

test("empty batches are paced only without a wait", async () => {
  script.batches.push([]);
  await assert.rejects(loop(okUnlessFail), Denied);
  assert.deepEqual(script.slept, []);

  script.batches.push([], []);
  await assert.rejects(loop(okUnlessFail, { waitMs: 0 }), Denied);
  assert.deepEqual(script.slept, [50, 100]);
});

test("settling retries transient errors and carries on past a lapsed lease", async (t) => {
  const logged = [];
  t.mock.method(console, "error", (line) => logged.push(line));
  script.batches.push([wire("a", "ok"), wire("b", "ok"), wire("c", "ok")]);
  // The batch call is refused twice as a whole, then answers: `a` done,
  // `b` unavailable for now, `c`'s lease lapsed.
  script.batchCalls.push(witError("rate-limited"), witError("unavailable", "x"), [
    ok,
    err(witError("unavailable", "y")),
    err(witError("not-found", "stale receipt")),
  ]);
  // `b` alone: unavailable once more, then done.
  script.settles.push(witError("unavailable", "z"));
  await assert.rejects(loop(okUnlessFail), (e) => e instanceof Denied && e.reason === "script over");
  assert.deepEqual(script.completed, ["a", "b"]);
  assert.deepEqual(script.batchSizes, [3, 3, 3]);
  assert.equal(script.singleCompletes, 2);
  assert.deepEqual(script.slept, [50, 100, 50]);
  assert.ok(logged.some((line) => line.includes("could not settle message c (stale receipt)")));
});

test("a lapsed lease on a single settle is skipped", async (t) => {
  t.mock.method(console, "error", () => {});
  script.batches.push([wire("a", "fail"), wire("b", "ok")]);
  script.settles.push(witError("rate-limited"), witError("not-found", "stale receipt"));
  await assert.rejects(loop(okUnlessFail), (e) => e instanceof Denied && e.reason === "script over");
  assert.deepEqual(script.abandoned, []);
  assert.deepEqual(script.completed, ["b"]);
  assert.deepEqual(script.slept, [50]);
});

test("a batch is completed in one call; failures are abandoned one by one", async (t) => {
  t.mock.method(console, "error", () => {});
  script.batches.push(
    Array.from({ length: 32 }, (_, i) => wire(`m${i}`, "ok")),
    [wire("x", "fail"), wire("y", "fail")],
    [wire("p", "ok"), wire("q", "fail"), wire("r", "ok")],
  );
  await assert.rejects(loop(okUnlessFail), Denied);
  // The batch of failures made no completion call.
  assert.deepEqual(script.batchSizes, [32, 2]);
  assert.equal(script.singleCompletes, 0);
  assert.equal(script.completed.length, 34);
  assert.deepEqual(script.completed.slice(32), ["p", "r"]);
  assert.deepEqual(script.abandoned, ["x", "y", "q"]);
});

test("a batch is completed once the whole batch is handled", async () => {
  const events = [];
  const completeBatch = bus.queue.completeBatch;
  bus.queue.completeBatch = (queue, receipts) => {
    events.push(`complete ${receipts.join(",")}`);
    return completeBatch(queue, receipts);
  };
  script.batches.push([wire("a", "ok"), wire("b", "ok")]);
  await assert.rejects(
    loop((message) => {
      events.push(`handle ${message.id}`);
    }),
    Denied,
  );
  assert.deepEqual(events, ["handle a", "handle b", "complete receipt-a,receipt-b"]);
});

test("messages a batch completion does not answer are completed alone", async () => {
  script.batches.push([wire("a", "ok"), wire("b", "ok"), wire("c", "ok")]);
  script.batchCalls.push([ok]);
  await assert.rejects(loop(okUnlessFail), (e) => e instanceof Denied && e.reason === "script over");
  assert.deepEqual(script.completed, ["a", "b", "c"]);
  assert.equal(script.singleCompletes, 2);
});

test("a batch completion that is denied ends run", async () => {
  for (const answer of [witError("denied", "revoked"), [ok, err(witError("denied", "revoked"))]]) {
    script.batches = [[wire("a", "ok"), wire("b", "ok")]];
    script.batchCalls = [answer];
    script.singleCompletes = 0;
    await assert.rejects(loop(okUnlessFail), (e) => e instanceof Denied && e.reason === "revoked");
    assert.equal(script.singleCompletes, 0);
  }
});

test("a settle that is denied ends run", async () => {
  script.batches.push([wire("a", "fail"), wire("b", "ok")]);
  script.settles.push(witError("denied", "revoked"));
  await assert.rejects(loop(okUnlessFail), (e) => e instanceof Denied && e.reason === "revoked");
  assert.deepEqual(script.completed, []);
  assert.deepEqual(script.abandoned, []);
});

test("a stop ends the loop once the batch is settled", async () => {
  script.stopAtEnd = true;
  script.batches.push([wire("a", "ok"), wire("b", "fail")]);
  assert.equal(await worker("q", okUnlessFail).run(), undefined);
  assert.deepEqual(script.completed, ["a"]);
  assert.deepEqual(script.abandoned, ["b"]);
});

test("a non-VMBus error from receive is rethrown as is", async () => {
  const bug = new TypeError("bug");
  script.batches.push(bug);
  await assert.rejects(loop(okUnlessFail), (e) => e === bug);
  assert.deepEqual(script.slept, []);
});

test("run logs the error that ended the loop and returns the WIT's err", async (t) => {
  const logged = [];
  t.mock.method(console, "error", (line) => logged.push(line));
  script.batches.push(witError("denied", "queue `q` is not granted"));
  // Resolves (a rejection without a payload would trap the component).
  assert.deepEqual(await worker("q", okUnlessFail).run(), { tag: "err" });
  assert.deepEqual(logged, ["weft: worker on queue `q` stopped: denied: queue `q` is not granted"]);
});

test("a handler that throws undefined, or rejects with nothing, abandons", async (t) => {
  t.mock.method(console, "error", () => {});
  script.batches.push([wire("a", "x"), wire("b", "x"), wire("c", "x")]);
  const outcomes = {
    a: () => {
      throw undefined;
    },
    b: () => Promise.reject(),
    c: async () => {},
  };
  await assert.rejects(
    loop((message) => outcomes[message.id]()),
    Denied,
  );
  assert.deepEqual(script.abandoned, ["a", "b"]);
  assert.deepEqual(script.completed, ["c"]);
});

test("a wait that rounds down to no wait is paced", async () => {
  script.batches.push([], []);
  await assert.rejects(loop(okUnlessFail, { waitMs: 0.5 }), Denied);
  assert.deepEqual(script.received.map((r) => r.waitMs), [0, 0, 0]);
  assert.deepEqual(script.slept, [50, 100]);
});
