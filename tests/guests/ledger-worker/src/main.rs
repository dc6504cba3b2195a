//! Test guest: a worker that records every delivery it gets, for the
//! durability tests' checker.
//!
//! It pulls from the queue named by the setting `queue` (default `jobs`) in
//! batches of 8, and for each delivery writes the key
//! `d/{body}/{dequeue count}/{receipt}` to the bucket `ledger` before
//! completing the message. A receipt names one delivery, so a message
//! delivered twice leaves two keys even if both deliveries claimed the same
//! dequeue count, which the checker would then catch. A body starting with
//! `slow` sleeps 200 ms first, so a test can kill a host mid-batch.

use std::time::Duration;

use weft_sdk::kv::Bucket;
use weft_sdk::worker::Worker;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = weft_sdk::config::get("queue")?.unwrap_or_else(|| "jobs".to_owned());
    let ledger = Bucket::open("ledger")?;
    Worker::new(queue)
        .batch_size(8)
        .visibility_timeout(Duration::from_secs(3))
        .wait(Duration::from_secs(1))
        .run(|message| {
            let body = message.body_str().map_err(|e| e.to_string())?;
            if body.starts_with("slow") {
                std::thread::sleep(Duration::from_millis(200));
            }
            let key = format!("d/{body}/{}/{}", message.dequeue_count(), message.receipt());
            ledger.set(&key, "1").map_err(|e| e.to_string())
        })?;
    Ok(())
}
