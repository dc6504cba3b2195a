// The dashboard's one way to the admin API: every call with the session
// cookie, and a change with the session's CSRF token, which the page reads
// once from /ui/session when it starts.

let csrf = "";

/** Keeps the session's CSRF token for the calls that change something. */
export function setCsrf(token) {
  csrf = token;
}

/** The session's CSRF token (signing out needs it too). */
export const csrfToken = () => csrf;

/** A path segment, encoded. */
export const q = (name) => encodeURIComponent(name);

/** One API call: {ok, status, data, error}. A lost session goes back to sign-in. */
export async function api(method, path, body) {
  const headers = {};
  if (method !== "GET" && method !== "HEAD") headers["X-Weft-Csrf"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    location.assign("/ui");
    throw new Error("signed out");
  }
  const type = response.headers.get("content-type") || "";
  const data = type.startsWith("application/json") ? await response.json().catch(() => null) : await response.text();
  const error = response.ok ? "" : (data && data.error) || `HTTP ${response.status}`;
  return { ok: response.ok, status: response.status, data, error };
}

/** How long an action's message stays at most: a success, then an error. */
const DONE_MS = 10000;
const ERROR_MS = 30000;
const shown = new Map(); // note element → {text, until, settled}

/** Shows `text` in `note` until `until` or until `settled(status)` holds. */
function show(note, text, error, until, settled) {
  note.classList.toggle("error", error);
  note.textContent = text;
  if (text) shown.set(note, { text, until, settled });
  else shown.delete(note);
}

/** Shows the outcome of an action in `note`: a 409 as a change under way.
 *  A success stays until `settled` (given each later read of /v1/services)
 *  says the state it announced is reached or superseded, or for DONE_MS. */
export function tell(note, reply, done, settled) {
  if (reply.ok) show(note, done, false, Date.now() + DONE_MS, settled);
  else if (reply.status === 409) show(note, `busy (409): ${reply.error}`, true, Date.now() + ERROR_MS);
  else show(note, `${reply.status}: ${reply.error}`, true, Date.now() + ERROR_MS);
}

/** Shows a failure that is no API reply (the host unreachable, a bug). */
export function fail(note, message) {
  show(note, message, true, Date.now() + ERROR_MS);
}

/** Clears the messages that are done with, after a read of the services. */
export function settle(status) {
  const now = Date.now();
  for (const [note, kept] of shown) {
    // Gone from the page, or replaced since: no longer this message's.
    if (!note.isConnected || note.textContent !== kept.text) {
      shown.delete(note);
      continue;
    }
    let over = now >= kept.until;
    if (!over && kept.settled) {
      try {
        over = Boolean(kept.settled(status));
      } catch {
        over = false;
      }
    }
    if (over) {
      note.textContent = "";
      note.classList.remove("error");
      shown.delete(note);
    }
  }
}
