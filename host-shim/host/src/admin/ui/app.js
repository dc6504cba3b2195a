// The Weft dashboard: reads the admin API (/v1) every two seconds with the
// session cookie and draws hosts, services, roles, instances, the operation
// under way, queues, buckets and guest output; its actions send the same API
// calls the CLI does, with the session's CSRF token.
//
// The modules, each served from /ui/ like this one:
// - api.js: the API calls, the CSRF token and how an action's outcome shows;
// - dom.js: elements made from data as text, never as markup;
// - render.js: hosts, services, roles, instances, operations, guest output;
// - stores.js and charts.js: the queue and bucket cards and depth charts;
// - actions.js: what the buttons and forms do.
// This one polls, and routes clicks and submits to the actions.

import { actions, place, roleStatus, submit } from "./actions.js";
import { api, csrfToken, fail, setCsrf, settle } from "./api.js";
import { drawHosts, drawLogs, drawServices } from "./render.js";
import { drawBuckets, drawQueues } from "./stores.js";

const POLL_MS = 2000;

let lastStatus = { services: [] }; // the last read, for the settings form
let timer = 0;
let refreshing = false;
let again = false;

async function refresh() {
  const problem = document.getElementById("problem");
  const status = await api("GET", "/v1/services");
  if (!status.ok) {
    problem.hidden = false;
    problem.textContent = `cannot read the services: ${status.status}: ${status.error}`;
    return;
  }
  lastStatus = status.data;
  const hosts = await api("GET", "/v1/fabric/hosts");
  drawHosts(hosts.ok ? hosts.data : null, status.data.services);
  drawServices(status.data);
  settle(status.data);
  for (const service of status.data.services) {
    const section = document.querySelector(`section[data-service="${CSS.escape(service.name)}"]`);
    await Promise.all([drawQueues(section, service), drawBuckets(section, service), drawLogs(section, service)]);
  }
  problem.hidden = true;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

/** Refreshes now (once more after the one under way, if any), then every POLL_MS. */
async function tick() {
  clearTimeout(timer);
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  try {
    await refresh();
  } catch (e) {
    const problem = document.getElementById("problem");
    problem.hidden = false;
    problem.textContent = `cannot reach the host: ${e.message}`;
  } finally {
    refreshing = false;
  }
  if (again) {
    again = false;
    tick();
    return;
  }
  timer = setTimeout(tick, POLL_MS);
}

document.addEventListener("click", async (event) => {
  const target = event.target;
  if (!(target instanceof Element)) return;
  const key = target.closest("li[data-key]");
  if (key) {
    const input = key.closest("[data-bucket]").querySelector('input[data-input="key"]');
    input.value = key.dataset.key;
    return;
  }
  const button = target.closest("button[data-action]");
  if (!button || !actions[button.dataset.action]) return;
  const at = place(button);
  button.disabled = true;
  try {
    await actions[button.dataset.action](at, roleStatus(at, lastStatus));
  } catch (e) {
    fail(at.note, e.message);
  } finally {
    button.disabled = false;
  }
  tick();
});

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.form) return;
  event.preventDefault();
  const at = place(form.parentElement);
  try {
    await submit(form, at, lastStatus);
  } catch (e) {
    fail(at.note, e.message);
  }
  tick();
});

// A count being typed is not overwritten by the next refresh.
for (const kind of ["input", "change"]) {
  document.addEventListener(kind, (event) => {
    if (event.target instanceof HTMLInputElement && event.target.dataset.action === "scale-count") {
      event.target.dataset.dirty = "1";
    }
  });
}

document.getElementById("signout").addEventListener("click", async () => {
  await fetch("/ui/signout", { method: "POST", headers: { "X-Weft-Csrf": csrfToken() }, credentials: "same-origin" }).catch(() => null);
  location.assign("/ui");
});

async function start() {
  const session = await fetch("/ui/session", { credentials: "same-origin" });
  if (!session.ok) {
    location.assign("/ui");
    return;
  }
  setCsrf((await session.json()).csrf);
  tick();
}

start();
