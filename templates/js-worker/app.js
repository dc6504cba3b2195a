/**
 * {{name}}'s worker role: takes each message from the queue `tasks` and
 * stores its word count, under the message's id, in the bucket `results`.
 *
 * `worker()` runs the pull loop: a handler that returns completes the
 * message; one that throws abandons it, to be delivered again (after five
 * deliveries it moves to the queue `tasks-poison`). Storing under the
 * message's id makes a repeated delivery harmless.
 */

import { kv, lifecycleHooks, worker } from "weft";

export const run = worker("tasks", (message) => {
  const words = message.text().split(/\s+/).filter((word) => word.length > 0).length;
  // `Bucket.open` keeps one handle per bucket for the instance's life, so
  // opening it per message costs nothing. Not at the top level: the build
  // runs the top level ahead of time, where no VMBus exists.
  kv.Bucket.open("results").set(message.id, String(words));
});

// Lifecycle hooks that do nothing; see lifecycleHooks({start, stop}) in the SDK.
export const hooks = lifecycleHooks();
