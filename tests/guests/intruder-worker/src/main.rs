//! Test guest: a worker role that tries to use a queue and a bucket its
//! manifest does not grant (`forbidden`), for the host's grant tests.
//!
//! At start it tries `queue::send`, `queue::receive` and `kv::Bucket::open`
//! on `forbidden`, prints each outcome to stderr as
//! `intruder: <call> forbidden -> <outcome>`, and writes the three lines to
//! the bucket `results` under the key `intruder` (if it may open `results`).
//! Then it completes everything on the queue `tasks`.

use std::time::Duration;

use weft_sdk::kv::Bucket;
use weft_sdk::queue::{self, ReceiveOptions};
use weft_sdk::worker::Worker;

fn main() -> Result<(), weft_sdk::Error> {
    let send = match queue::send("forbidden", b"x") {
        Ok(id) => format!("ok {id}"),
        Err(e) => format!("err {e}"),
    };
    let options = ReceiveOptions {
        max_messages: 1,
        wait: Duration::ZERO,
        ..ReceiveOptions::default()
    };
    let receive = match queue::receive("forbidden", &options) {
        Ok(batch) => format!("ok {} messages", batch.len()),
        Err(e) => format!("err {e}"),
    };
    let open = match Bucket::open("forbidden") {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("err {e}"),
    };
    let report = [
        format!("intruder: send forbidden -> {send}"),
        format!("intruder: receive forbidden -> {receive}"),
        format!("intruder: open forbidden -> {open}"),
    ];
    for line in &report {
        eprintln!("{line}");
    }
    match Bucket::open("results").and_then(|results| results.set("intruder", report.join("\n"))) {
        Ok(()) => {}
        Err(e) => eprintln!("intruder: could not record the outcomes: {e}"),
    }

    Worker::new("tasks").run(|_| Ok::<(), String>(()))?;
    Ok(())
}
