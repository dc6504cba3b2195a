// What the dashboard's buttons and forms do: each sends the API call the
// CLI would, with the session's CSRF token (api.js), and says how it went in
// the note of the card it belongs to.

import { api, q, tell } from "./api.js";
import { el } from "./dom.js";

/** Messages one peek shows of a queue. */
const PEEK_MAX = 10;

/** Where a clicked element is: its service, role, queue and bucket. */
export function place(target) {
  const pick = (selector, key) => {
    const node = target.closest(selector);
    return node ? node.dataset[key] : undefined;
  };
  const container = target.closest("[data-queue], [data-bucket], [data-role], section[data-service]");
  return {
    service: pick("section[data-service]", "service"),
    role: pick("[data-role]", "role"),
    queue: pick("[data-queue]", "queue"),
    bucket: pick("[data-bucket]", "bucket"),
    container,
    note: container.querySelector(":scope > [data-note]"),
    forms: container.querySelector(':scope > [data-part="forms"]'),
  };
}

/** Opens `form` in `forms` (closing it if the same kind is open). */
function toggleForm(forms, kind, make) {
  const open = forms.querySelector(`form[data-form="${kind}"]`);
  forms.replaceChildren();
  if (!open) forms.append(make());
}

function closeButton() {
  return el("button", { type: "button", "data-action": "close-form" }, "Cancel");
}

export const actions = {
  async scale(at, role) {
    const input = at.container.querySelector('input[data-action="scale-count"]');
    const count = Number(input.value);
    const before = role ? role.declared : undefined;
    const reply = await api("PUT", `/v1/services/${q(at.service)}/roles/${q(at.role)}/instances`, { count });
    // Done once that many are ready; superseded once the count changes
    // again (after reaching this one, or to a third).
    let reached = false;
    tell(at.note, reply, `scaling to ${count}`, (status) => {
      const now = roleStatus(at, status);
      if (!now) return true;
      if (now.declared === count) {
        reached = true;
        return now.ready === count;
      }
      return reached || now.declared !== before;
    });
    if (reply.ok) delete input.dataset.dirty;
  },
  settings(at, role) {
    const settings = role ? role.settings : {};
    toggleForm(at.forms, "settings", () => el("form", { "data-form": "settings", class: "form" },
      ...Object.entries(settings).map(([key, value]) =>
        el("label", {}, key, el("input", { type: "text", name: key, value }))),
      el("label", {}, "new setting", el("input", { type: "text", "data-input": "new-key", placeholder: "name" })),
      el("label", {}, "its value", el("input", { type: "text", "data-input": "new-value", placeholder: "value" })),
      el("div", { class: "actions" }, el("button", { type: "submit" }, "Apply settings"), closeButton())));
  },
  async upgrade(at) {
    if (at.forms.querySelector('form[data-form="upgrade"]')) {
      at.forms.replaceChildren();
      return;
    }
    const reply = await api("GET", `/v1/services/${q(at.service)}/source`);
    if (!reply.ok) {
      tell(at.note, reply, "");
      return;
    }
    const source = reply.data;
    const form = el("form", { "data-form": "upgrade", class: "form" },
      el("label", {}, `manifest (${source.manifest_file})`,
        el("textarea", { name: "manifest", rows: 16, spellcheck: "false" })),
      ...Object.entries(source.components || {}).map(([role, digest]) =>
        el("label", {}, `component of ${role} (already uploaded)`, el("input", { type: "text", name: `component:${role}`, value: digest }))),
      el("div", { class: "actions" }, el("button", { type: "submit" }, "Start upgrade"), closeButton()));
    form.querySelector("textarea").value = source.manifest;
    form.source = source;
    at.forms.replaceChildren(form);
  },
  async remove(at) {
    if (!confirm(`Remove service ${at.service}? Its instances stop; its data folder stays.`)) return;
    const reply = await api("DELETE", `/v1/services/${q(at.service)}`);
    tell(at.note, reply, `removed ${at.service}`);
  },
  send(at) {
    toggleForm(at.forms, "send", () => el("form", { "data-form": "send", class: "form" },
      el("label", {}, "message body", el("textarea", { name: "body", rows: 3 })),
      el("label", {}, "delay (ms)", el("input", { type: "number", name: "delay_ms", min: 0, value: 0 })),
      el("div", { class: "actions" }, el("button", { type: "submit" }, "Send message"), closeButton())));
  },
  async peek(at) {
    const output = at.container.querySelector('[data-part="output"]');
    const lines = [];
    // A card whose queue has no poison queue of its own (a poison queue
    // itself) peeks just its queue, never `<queue>-poison-poison`.
    const names = at.container.dataset.poison === "true" ? [at.queue, `${at.queue}-poison`] : [at.queue];
    for (const name of names) {
      const reply = await api("GET", `/v1/services/${q(at.service)}/queues/${q(name)}/messages?max=${PEEK_MAX}`);
      if (!reply.ok) {
        tell(at.note, reply, "");
        return;
      }
      lines.push(`${name}: ${reply.data.messages.length} shown`);
      for (const m of reply.data.messages) {
        const body = m.body ?? `(binary) ${m.body_base64}`;
        lines.push(`  ${m.id} · dequeued ${m.dequeue_count}×${m.poison_reason ? ` · ${m.poison_reason}` : ""} · ${body}`);
      }
    }
    output.textContent = lines.join("\n");
    tell(at.note, { ok: true }, "peeked");
  },
  async redrive(at) {
    const reply = await api("POST", `/v1/services/${q(at.service)}/queues/${q(at.queue)}/redrive`, {});
    tell(at.note, reply, reply.ok ? `moved ${reply.data.moved.length} back to ${at.queue}` : "");
  },
  async purge(at) {
    if (!confirm(`Purge every message of queue ${at.queue}?`)) return;
    const reply = await api("DELETE", `/v1/services/${q(at.service)}/queues/${q(at.queue)}/messages`);
    tell(at.note, reply, reply.ok ? `purged ${reply.data.purged}` : "");
  },
  async "purge-poison"(at) {
    if (!confirm(`Purge every message of queue ${at.queue}-poison?`)) return;
    const reply = await api("DELETE", `/v1/services/${q(at.service)}/queues/${q(`${at.queue}-poison`)}/messages`);
    tell(at.note, reply, reply.ok ? `purged ${reply.data.purged}` : "");
  },
  async keys(at, _role, more) {
    const list = at.container.querySelector('[data-part="keys"]');
    const cursor = more ? list.dataset.cursor : "";
    const reply = await api("GET", `/v1/services/${q(at.service)}/buckets/${q(at.bucket)}/keys${cursor ? `?cursor=${q(cursor)}` : ""}`);
    if (!reply.ok) {
      tell(at.note, reply, "");
      return;
    }
    if (!more) list.replaceChildren();
    list.querySelector("li.more")?.remove();
    for (const key of reply.data.keys) list.append(el("li", { "data-key": key }, key));
    if (reply.data.cursor !== null && reply.data.cursor !== undefined) {
      list.dataset.cursor = String(reply.data.cursor);
      list.append(el("li", { class: "more" }, el("button", { type: "button", "data-action": "keys-more" }, "More keys")));
    }
    tell(at.note, reply, `${list.querySelectorAll("li[data-key]").length} keys shown; pick one to fill the key box`);
  },
  "keys-more"(at) {
    return actions.keys(at, null, true);
  },
  async "delete-key"(at) {
    const key = at.container.querySelector('input[data-input="key"]').value;
    if (!key) {
      tell(at.note, { ok: false, status: 400, error: "type a key, or pick one from the list" }, "");
      return;
    }
    const reply = await api("POST", `/v1/services/${q(at.service)}/buckets/${q(at.bucket)}/keys/delete`, { keys: [key] });
    tell(at.note, reply, reply.ok ? `deleted ${reply.data.deleted}` : "");
    if (reply.ok) at.container.querySelector(`li[data-key="${CSS.escape(key)}"]`)?.remove();
  },
  async "purge-bucket"(at) {
    if (!confirm(`Delete every key of bucket ${at.bucket}?`)) return;
    const reply = await api("DELETE", `/v1/services/${q(at.service)}/buckets/${q(at.bucket)}/keys`);
    tell(at.note, reply, reply.ok ? `purged ${reply.data.purged}` : "");
    if (reply.ok) at.container.querySelector('[data-part="keys"]').replaceChildren();
  },
  "close-form"(at) {
    at.forms.replaceChildren();
  },
};

/** Whether the service at `at` has, in `status`, finished an operation to
 *  a generation past `before` (or is gone): what "... started" announced. */
const operationOver = (at, before) => (status) => {
  const service = status.services.find((s) => s.name === at.service);
  if (!service) return true;
  const operation = service.operation;
  return Boolean(operation && operation.generation > before && operation.state !== "running");
};

export async function submit(form, at, status) {
  const kind = form.dataset.form;
  const service = status.services.find((s) => s.name === at.service);
  const before = service ? service.generation : 0;
  let reply;
  let done = "";
  let settled;
  if (kind === "settings") {
    const settings = {};
    for (const input of form.querySelectorAll("input[name]")) settings[input.name] = input.value;
    const key = form.querySelector('[data-input="new-key"]').value.trim();
    if (key) settings[key] = form.querySelector('[data-input="new-value"]').value;
    reply = await api("PUT", `/v1/services/${q(at.service)}/roles/${q(at.role)}/settings`, { settings });
    done = "settings change started";
    settled = operationOver(at, before);
  } else if (kind === "upgrade") {
    const source = { ...form.source, manifest: form.querySelector("textarea").value, components: { ...form.source.components } };
    for (const input of form.querySelectorAll("input[name^='component:']")) source.components[input.name.slice(10)] = input.value.trim();
    reply = await api("POST", `/v1/services/${q(at.service)}/upgrade`, source);
    done = "upgrade started";
    settled = operationOver(at, before);
  } else if (kind === "send") {
    const message = { body: form.querySelector("textarea").value };
    const delay = Number(form.querySelector("input[name=delay_ms]").value);
    if (delay > 0) message.delay_ms = delay;
    reply = await api("POST", `/v1/services/${q(at.service)}/queues/${q(at.queue)}/messages`, message);
    done = reply.ok ? `sent ${reply.data.id}` : "";
  } else {
    return;
  }
  tell(at.note, reply, done, settled);
  if (reply.ok) at.forms.replaceChildren();
}

/** The role the element at `at` belongs to, in the last read `status`. */
export function roleStatus(at, status) {
  const service = status.services.find((s) => s.name === at.service);
  return service ? service.roles.find((r) => r.name === at.role) : undefined;
}
