// A service's queues and buckets: one card each, kept across refreshes (a
// form or a key list open in one stays open), with the depth chart of a
// queue and the buttons of its actions (actions.js).

import { api, q } from "./api.js";
import { chart, trend } from "./charts.js";
import { el, keep } from "./dom.js";

/** Samples a page keeps of a queue when the host's history is unavailable. */
const LOCAL_SAMPLES = 300;
const localHistory = new Map(); // "service/queue" → samples seen by this page

/** Whether a queue has a poison queue of its own: a poison queue has none. */
const hasPoison = (queue) => queue.poison_length !== null && queue.poison_length !== undefined;

/** The queues from the server's history, or from this page's own samples. */
async function queuesOf(service) {
  const reply = await api("GET", `/v1/services/${q(service.name)}/queues`);
  if (reply.ok) return { queues: reply.data.queues, note: "" };
  const seen = new Map();
  for (const role of service.roles) for (const queue of role.queues) seen.set(queue.name, queue);
  const queues = [...seen.values()].map((queue) => {
    const key = `${service.name}/${queue.name}`;
    const samples = localHistory.get(key) || [];
    samples.push({ at_ms: Date.now(), length: queue.length || 0, poison_length: queue.poison || 0 });
    while (samples.length > LOCAL_SAMPLES) samples.shift();
    localHistory.set(key, samples);
    return { name: queue.name, length: queue.length, poison_length: queue.poison, history: samples };
  });
  return { queues, note: `queue history is unavailable (${reply.status}: ${reply.error}); charts show what this page saw` };
}

function newQueue(name) {
  return el("div", { class: "card queue", "data-queue": name },
    el("h4", {}, `queue ${name}`),
    el("p", { "data-part": "depth" }),
    el("div", { "data-part": "chart" }),
    el("div", { class: "actions" },
      el("button", { type: "button", "data-action": "send" }, "Send"),
      el("button", { type: "button", "data-action": "peek" }, "Peek"),
      el("button", { type: "button", "data-action": "redrive" }, "Redrive poison"),
      el("button", { type: "button", "data-action": "purge", class: "danger" }, "Purge"),
      el("button", { type: "button", "data-action": "purge-poison", class: "danger" }, "Purge poison")),
    el("p", { class: "note", "data-note": "queue", role: "status" }),
    el("div", { "data-part": "forms" }),
    el("pre", { class: "output", "data-part": "output" }));
}

/** Draws the queue cards of `service` in its `section`. */
export async function drawQueues(section, service) {
  const box = section.querySelector('[data-part="queues"]');
  const { queues, note } = await queuesOf(service);
  const names = new Set(queues.map((x) => x.name));
  for (const card of box.querySelectorAll(":scope > [data-queue]")) if (!names.has(card.dataset.queue)) card.remove();
  const notice = keep(box, "p.unavailable", () => el("p", { class: "muted unavailable" }));
  notice.textContent = note;
  for (const queue of queues) {
    const card = keep(box, `[data-queue="${CSS.escape(queue.name)}"]`, () => newQueue(queue.name));
    const poison = hasPoison(queue);
    // A poison queue (or one whose poison depth is unknown) has no poison
    // queue to peek, redrive or purge: `jobs-poison-poison` is no queue.
    card.dataset.poison = String(poison);
    for (const button of card.querySelectorAll('button[data-action="redrive"], button[data-action="purge-poison"]')) {
      button.hidden = !poison;
    }
    card.querySelector('[data-part="depth"]').textContent = poison
      ? `${queue.length ?? "?"} messages · ${queue.poison_length} poisoned · ${trend(queue.history)}`
      : `${queue.length ?? "?"} messages · ${trend(queue.history)}`;
    card.querySelector('[data-part="chart"]').replaceChildren(chart(queue.history));
  }
}

function newBucket(name) {
  return el("div", { class: "card bucket", "data-bucket": name },
    el("h4", {}, `bucket ${name}`),
    el("p", { class: "muted", "data-part": "ttl" }),
    el("div", { class: "actions" },
      el("button", { type: "button", "data-action": "keys" }, "List keys"),
      el("input", { type: "text", "data-input": "key", placeholder: "key", "aria-label": "key" }),
      el("button", { type: "button", "data-action": "delete-key", class: "danger" }, "Delete key"),
      el("button", { type: "button", "data-action": "purge-bucket", class: "danger" }, "Purge bucket")),
    el("p", { class: "note", "data-note": "bucket", role: "status" }),
    el("ul", { class: "keys", "data-part": "keys" }));
}

/** Draws the bucket cards of `service` in its `section`. */
export async function drawBuckets(section, service) {
  const box = section.querySelector('[data-part="buckets"]');
  const reply = await api("GET", `/v1/services/${q(service.name)}/buckets`);
  const buckets = reply.ok ? reply.data.buckets : [];
  const notice = keep(box, "p.unavailable", () => el("p", { class: "muted unavailable" }));
  notice.textContent = reply.ok ? "" : `buckets are unavailable (${reply.status}: ${reply.error})`;
  const names = new Set(buckets.map((b) => b.name));
  for (const card of box.querySelectorAll(":scope > [data-bucket]")) if (!names.has(card.dataset.bucket)) card.remove();
  for (const bucket of buckets) {
    const card = keep(box, `[data-bucket="${CSS.escape(bucket.name)}"]`, () => newBucket(bucket.name));
    card.querySelector('[data-part="ttl"]').textContent =
      bucket.ttl_seconds ? `entries expire after ${bucket.ttl_seconds} s` : "entries never expire";
  }
}
