/**
 * The VMBus imports every SDK module calls through, gathered in one object.
 *
 * In a component these are the world's imports, bound by componentize-js.
 * Keeping them behind one mutable object lets the unit tests (plain Node,
 * where `weft:` and `wasi:` modules do not exist) put scripted fakes in
 * their place, as the Rust SDK's tests do with its `Bus` trait.
 */

import * as config from "wasi:config/store@0.2.0-rc.1";
import * as keyvalue from "wasi:keyvalue/store@0.2.0-draft";
import * as lifecycle from "weft:vmbus/lifecycle@0.1.0";
import * as queue from "weft:vmbus/queue@0.1.0";
import * as usage from "weft:vmbus/usage@0.1.0";

/**
 * The imports, plus `sleep(ms)` (a promise that settles after `ms`
 * milliseconds), which the worker's backoff awaits.
 *
 * @type {{queue: any, lifecycle: any, usage: any, keyvalue: any, config: any, sleep: (ms: number) => Promise<void>}}
 */
export const bus = {
  queue,
  lifecycle,
  usage,
  keyvalue,
  config,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};
