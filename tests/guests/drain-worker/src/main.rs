//! Test guest: a worker that completes every message it receives, in
//! batches of 32, doing nothing else: what the queue benchmark measures is
//! the path of a message, not a handler.

use std::time::Duration;

use weft_sdk::worker::Worker;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    Worker::new("jobs")
        .batch_size(32)
        .wait(Duration::from_secs(1))
        .run(|_| Ok::<(), String>(()))?;
    Ok(())
}
