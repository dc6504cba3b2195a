// Hosts, services, roles, instances, the operation under way and guest
// output, drawn from one read of the API. Elements that hold what a person
// is typing (the scale count, the forms) are made once and kept across
// refreshes.

import { api, q } from "./api.js";
import { clock, el, human, keep, share } from "./dom.js";

/** Lines of guest output shown per role. */
const LOG_LINES = 50;
const logs = new Map(); // "service/role" → {after, lines}

export function drawHosts(fabric, services) {
  const hosts = document.getElementById("hosts");
  if (fabric) {
    hosts.className = "grid hosts";
    const leader = fabric.leader ? fabric.leader.host : null;
    hosts.replaceChildren(...fabric.hosts.map((host) => {
      const slots = host.capacity ? host.capacity.slots : 0;
      return el("div", { class: "card host", "data-host": host.id, "data-state": host.state },
        el("div", { class: "line" },
          el("strong", {}, host.id),
          host.id === leader ? el("span", { class: "badge" }, "leader") : null,
          el("span", { class: "muted" }, `${host.state}${host.drain ? ", draining" : ""} · domain ${host.fault_domain}`)),
        el("div", { class: "line" },
          el("span", {}, `${host.slots_used}/${slots} slots`),
          el("meter", { min: 0, max: Math.max(slots, 1), value: host.slots_used }),
          el("span", { class: "muted" }, `${host.runs.length} roles · ${host.version}`)));
    }));
    return;
  }
  let ready = 0;
  let declared = 0;
  let fuel = 0;
  for (const service of services) {
    for (const role of service.roles) {
      ready += role.ready;
      declared += role.declared;
      fuel += role.usage.fuel_used;
    }
  }
  // Outside a fabric there is one host: a single line, not a card grid.
  hosts.className = "hosts single";
  hosts.replaceChildren(el("div", { class: "card host line", "data-host": "local", "data-state": "ready" },
    el("strong", {}, "this host"),
    el("span", { class: "muted" }, `${location.host} · not in a fabric`),
    el("span", {}, `${ready}/${declared} instances ready · ${services.length} services`),
    el("meter", { min: 0, max: Math.max(declared, 1), value: ready }),
    el("span", { class: "muted" }, `fuel ${human(fuel)}`)));
}

// ---- services

export function drawServices(status) {
  const box = document.getElementById("services");
  const names = new Set(status.services.map((s) => s.name));
  for (const section of box.querySelectorAll(":scope > section[data-service]")) {
    if (!names.has(section.dataset.service)) section.remove();
  }
  for (const service of status.services) {
    const section = keep(box, `section[data-service="${CSS.escape(service.name)}"]`, () => newService(service.name));
    drawService(section, service);
  }
  document.getElementById("pending").replaceChildren(...(status.pending || []).map((p) =>
    el("p", { class: "card", "data-pending": p.name }, `${p.name}: ${p.state}${p.reason ? ` (${p.reason})` : ""}`)));
}

function newService(name) {
  return el("section", { class: "service", "data-service": name },
    el("header", { class: "bar" },
      el("h3", {}, name),
      el("span", { class: "muted", "data-part": "summary" }),
      el("button", { type: "button", "data-action": "upgrade" }, "Upgrade"),
      el("button", { type: "button", "data-action": "remove", class: "danger" }, "Remove")),
    el("p", { class: "note", "data-note": "service", role: "status" }),
    el("div", { "data-part": "forms" }),
    el("div", { "data-part": "operation" }),
    // One grid for the roles, queues and buckets together: each part is
    // `display: contents`, so its cards fill the same rows.
    el("div", { class: "grid cards" },
      el("div", { class: "part", "data-part": "roles" }),
      el("div", { class: "part", "data-part": "queues" }),
      el("div", { class: "part", "data-part": "buckets" })));
}

function drawService(section, service) {
  const summary = section.querySelector('[data-part="summary"]');
  summary.textContent = `generation ${service.generation}${service.environment ? ` · ${service.environment}` : ""} · ${service.upgrade_domains} domains${service.store_failing ? ` · store failing: ${service.store_failing}` : ""}`;
  drawOperation(section.querySelector('[data-part="operation"]'), service.operation);
  const roles = section.querySelector('[data-part="roles"]');
  const names = new Set(service.roles.map((r) => r.name));
  for (const card of roles.querySelectorAll(":scope > [data-role]")) {
    if (!names.has(card.dataset.role)) card.remove();
  }
  for (const role of service.roles) {
    let card = roles.querySelector(`:scope > [data-role="${CSS.escape(role.name)}"]`);
    if (card && card.dataset.kind !== role.kind) {
      card.remove();
      card = null;
    }
    if (!card) {
      card = newRole(role);
      roles.append(card);
    }
    drawRole(card, role);
  }
}

/** The operation: expanded while it runs; once finished, one line with its
 *  steps folded in a `<details>` (kept open across refreshes if opened). */
function drawOperation(box, operation) {
  if (!operation) {
    box.replaceChildren();
    return;
  }
  const steps = operation.steps || [];
  const running = operation.state === "running";
  const list = el("ol", {}, ...steps.map((step, i) =>
    el("li", { "data-step": i, "data-done": String(!running || i < steps.length - 1) }, step)));
  const reason = operation.reason ? el("p", { class: "error" }, operation.reason) : null;
  const attrs = { class: `card operation${running ? "" : " finished"}`, "data-operation": operation.kind, "data-state": operation.state };
  if (running) {
    box.replaceChildren(el("div", attrs,
      el("h4", {}, `${operation.kind} to generation ${operation.generation}: ${operation.state}`),
      el("p", {}, `domains ${operation.domains_done}/${operation.domains} · ${operation.step}`),
      el("meter", { min: 0, max: Math.max(operation.domains, 1), value: operation.domains_done }),
      reason,
      list));
    return;
  }
  const wasOpen = box.querySelector("details")?.open;
  const details = el("details", {},
    el("summary", {},
      el("strong", { class: "state" }, operation.state),
      ` ${operation.kind} to generation ${operation.generation} · ${steps.length} step${steps.length === 1 ? "" : "s"}`),
    list);
  details.open = Boolean(wasOpen);
  box.replaceChildren(el("div", attrs, details, reason));
}

function newRole(role) {
  const card = el("div", { class: "card role", "data-role": role.name, "data-kind": role.kind },
    // The kind as a badge, left out when the name already says it ("web").
    el("h4", {}, role.name, role.kind !== role.name ? el("span", { class: "badge" }, role.kind) : null),
    el("p", { "data-part": "counts" }),
    el("p", { class: "muted", "data-part": "usage" }),
    el("ul", { class: "instances", "data-part": "instances" }));
  const actions = el("div", { class: "actions" });
  if (role.kind === "worker") {
    actions.append(
      el("input", { type: "number", min: 1, step: 1, value: role.declared, "data-action": "scale-count", "aria-label": "instances" }),
      el("button", { type: "button", "data-action": "scale" }, "Scale"));
  }
  actions.append(el("button", { type: "button", "data-action": "settings" }, "Settings"));
  card.append(actions,
    el("p", { class: "note", "data-note": "role", role: "status" }),
    el("div", { "data-part": "forms" }),
    el("h5", {}, "Recent output"),
    el("pre", { class: "logs", "data-logs": role.name }));
  return card;
}

function drawRole(card, role) {
  card.setAttribute("data-ready", role.ready);
  card.setAttribute("data-declared", role.declared);
  card.querySelector('[data-part="counts"]').textContent =
    `${role.ready}/${role.declared} ready · generation ${role.generation}${role.url ? ` · ${role.url}` : ""}`;
  const u = role.usage;
  // The share is of the fuel all guests on this host burnt in the last
  // second, so a lone busy role reads 100%: say "idle" when it burnt
  // nothing (no share, or no fuel since the page's last read).
  const before = card.dataset.fuel;
  card.dataset.fuel = String(u.fuel_used);
  const idle = !u.cpu_share_ppm || before === String(u.fuel_used);
  card.querySelector('[data-part="usage"]').textContent =
    `share of guest CPU, last second: ${idle ? "idle" : share(u.cpu_share_ppm)} · fuel ${human(u.fuel_used)} · memory ${human(u.memory_bytes)}B · ${human(u.invocations)} calls · ${u.failures} failures`;
  card.querySelector('[data-part="instances"]').replaceChildren(...role.instances.map((i) =>
    el("li", { "data-instance": i.id, "data-state": i.state, class: i.crash_looping ? "crash" : undefined },
      `${i.id}: ${i.state}`,
      i.restarts ? ` · ${i.restarts} restarts` : "",
      i.crash_looping ? " · crash loop" : "",
      i.last_failure ? el("span", { class: "muted" }, ` · ${i.last_failure}`) : null)));
  const count = card.querySelector('input[data-action="scale-count"]');
  if (count && document.activeElement !== count && !count.dataset.dirty) count.value = role.declared;
}

export async function drawLogs(section, service) {
  for (const role of service.roles) {
    const key = `${service.name}/${role.name}`;
    const kept = logs.get(key) || { after: 0, lines: [] };
    for (let round = 0; round < 20; round++) {
      const reply = await api("GET", `/v1/services/${q(service.name)}/roles/${q(role.name)}/logs?after=${kept.after}&limit=${LOG_LINES}`);
      if (!reply.ok) break;
      kept.lines.push(...reply.data.lines);
      kept.after = reply.data.next;
      if (reply.data.lines.length < LOG_LINES) break;
    }
    kept.lines = kept.lines.slice(-LOG_LINES);
    logs.set(key, kept);
    const pre = section.querySelector(`pre[data-logs="${CSS.escape(role.name)}"]`);
    if (pre) {
      pre.textContent = kept.lines.length
        ? kept.lines.map((l) => `${clock(l.at_ms)} ${l.instance} ${l.stream}: ${l.text}`).join("\n")
        : "(nothing printed yet)";
    }
  }
}
