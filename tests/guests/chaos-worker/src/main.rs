//! Test guest: a worker role that misbehaves on request, for the host's
//! supervision and redelivery tests.
//!
//! It pulls from the queue named by the setting `queue` (default `tasks`),
//! one message per batch (so one bad message never holds up another).
//! Before handling a message it writes the message's dequeue count to the
//! key-value bucket `results` under `seen/{id}`, so tests can see
//! redeliveries. Then, by message body:
//!
//! * `ok` (or anything not listed): writes `done dequeue={n}` under `{id}`;
//! * `fail`: returns an error, so the message is abandoned;
//! * `spin`: loops forever (the host must interrupt it);
//! * `panic`: panics (the instance traps);
//! * `sleep:{ms}`: sleeps that long, then as `ok`;
//! * `burn:{n}`: runs a loop of `n` steps (a known amount of fuel), then as `ok`.
//!
//! With the setting `idle-burn = "{n}"` it takes no message: it loops
//! forever on an empty receive (no wait) followed by `n` steps of burning,
//! writing the round it finished under `idle-round`, so a test can see how
//! far one instance's fuel went when empty receives bring none.

use std::time::Duration;

use weft_sdk::kv::Bucket;
use weft_sdk::queue::{Message, ReceiveOptions};
use weft_sdk::worker::Worker;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = weft_sdk::config::get("queue")?.unwrap_or_else(|| "tasks".to_owned());
    let results = Bucket::open("results")?;
    if let Some(steps) = weft_sdk::config::get("idle-burn")? {
        let steps: u64 = steps.parse()?;
        let options = ReceiveOptions {
            wait: Duration::ZERO,
            ..ReceiveOptions::default()
        };
        for round in 1u64.. {
            if !weft_sdk::queue::receive(&queue, &options)?.is_empty() {
                return Err("idle-burn wants an empty queue".into());
            }
            burn(steps);
            results.set("idle-round", round.to_string())?;
        }
    }
    eprintln!("chaos-worker: pulling from `{queue}`");
    Worker::new(queue)
        .batch_size(1)
        .run(|message| handle(&results, message))?;
    Ok(())
}

fn handle(results: &Bucket, message: &Message) -> Result<(), String> {
    let id = message.id();
    let n = message.dequeue_count();
    results
        .set(&format!("seen/{id}"), n.to_string())
        .map_err(|e| e.to_string())?;
    match message.body() {
        b"fail" => return Err("asked to fail".to_owned()),
        b"spin" => loop {
            std::hint::black_box(());
        },
        b"panic" => panic!("chaos-worker: asked to panic on message {id}"),
        body if body.starts_with(b"burn:") => {
            let steps: u64 = std::str::from_utf8(&body[5..])
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or("burn needs a step count")?;
            burn(steps);
        }
        body => {
            if let Some(ms) = body
                .strip_prefix(b"sleep:")
                .and_then(|ms| std::str::from_utf8(ms).ok()?.parse().ok())
            {
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
    }
    results
        .set(id, format!("done dequeue={n}"))
        .map_err(|e| e.to_string())
}

/// A loop of `steps` steps: a known amount of fuel.
fn burn(steps: u64) {
    let mut total = 0u64;
    for step in 0..steps {
        total = std::hint::black_box(total.wrapping_add(step));
    }
    std::hint::black_box(total);
}
